"""Shell commands, one module per family; importing this package registers them all."""
from __future__ import annotations

from modelshell.commands import files, inspect, meta, stats, transfer  # noqa: F401 - imported to register the commands
from modelshell.commands.registry import COMMANDS, GROUPS, Command

__all__ = ["COMMANDS", "GROUPS", "Command"]
