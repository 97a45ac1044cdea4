"""Copying an array into a buffer with the fastest copy kernel a loaded framework lends.

numpy copies a transposed view element by element in the source's order: 9 ms for one 768x3072 dense
kernel, where torch's copy kernel, which transposes in tiles on every core, takes 2 ms. A copy from torch
into Keras transposes every dense kernel, so the Keras adapter's writes go through ``copy_into``. An
adapter lends its kernel when it is imported (``lend_copy_kernel``); nothing here imports a framework.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["copy_into", "lend_copy_kernel"]

# A kernel copies ``value`` into ``out`` (same shape) and returns True, or returns False, untouched,
# when it cannot take these two arrays.
CopyKernel = Callable[["np.ndarray", "np.ndarray"], bool]
_kernels: list[CopyKernel] = []


def lend_copy_kernel(kernel: CopyKernel) -> None:
    if kernel not in _kernels:
        _kernels.append(kernel)


def copy_into(out: np.ndarray, value: np.ndarray) -> None:
    """``np.copyto(out, value)`` with numpy's unsafe casting (what ``np.asarray(value, dtype)`` does),
    by a lent kernel where one takes the arrays."""
    import numpy as np

    if not any(kernel(out, value) for kernel in _kernels):
        np.copyto(out, value, casting="unsafe")
