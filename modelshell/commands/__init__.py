"""Shell commands, one module per family; ``default_registry`` is what a session runs."""
from __future__ import annotations

from modelshell.commands import files, inspect, meta, stats, transfer
from modelshell.commands.registry import GROUPS, Command, CommandRegistry

__all__ = ["FAMILIES", "GROUPS", "Command", "CommandRegistry", "default_registry"]

FAMILIES = (files, inspect, meta, stats, transfer)  # a new family of commands is added here


def default_registry() -> CommandRegistry:
    """Every command of every family, as the shell, ``run`` and transcripts have them."""
    registry = CommandRegistry()
    for family in FAMILIES:
        registry.add_family(family)
    return registry
