"""What keeps hostile or broken files and input from hurting the session: the pickle scan, the HDF5
probe, file checks before opening, atomic and durable writes, and resource bounds.

Nothing here imports a framework: the torch and Keras adapters call in, not the other way round.
"""
from __future__ import annotations

__all__: list[str] = []
