"""Copying an array into a buffer with the fastest copy kernel a loaded framework lends.

numpy copies a transposed view element by element in the source's order: 9 ms for one 768x3072 dense
kernel, where torch's copy kernel, which transposes in tiles on every core, takes 2 ms. A copy from torch
into Keras transposes every dense kernel, so the Keras adapter's writes go through ``copy_into``. An
adapter lends its kernel when it is imported (``lend_copy_kernel``); nothing here imports a framework.

A conversion that transposes and then reshapes (the Dense after a flatten: VGG16's 411 MB first kernel)
cannot give a numpy view: ``reshape`` of a transposed array copies it, element by element, and holds it
once more until the write copies it again. ``reshaped`` returns a ``Reshaped`` instead, the view with
the shape it must take, and ``copy_into`` writes it into the destination buffer seen in the view's
shape, which is the same map (a C-ordered buffer reshapes as a view to any shape of its size).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Reshaped", "copy_into", "lend_copy_kernel", "reshaped"]

# A kernel copies ``value`` into ``out`` (same shape) and returns True, or returns False, untouched,
# when it cannot take these two arrays.
CopyKernel = Callable[["np.ndarray", "np.ndarray"], bool]
_kernels: list[CopyKernel] = []


def lend_copy_kernel(kernel: CopyKernel) -> None:
    if kernel not in _kernels:
        _kernels.append(kernel)


class Reshaped:
    """``np.reshape(view, shape)`` not made yet: ``view``'s values in C order, in ``shape``. It has the
    shape, size and dtype of the result; ``np.asarray`` makes it (a copy), ``copy_into`` writes it
    without one."""

    def __init__(self, view: np.ndarray, shape: tuple[int, ...]) -> None:
        self.view, self.shape = view, tuple(int(n) for n in shape)

    @property
    def dtype(self) -> np.dtype:
        return self.view.dtype

    @property
    def size(self) -> int:
        return self.view.size

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.view.nbytes

    def reshape(self, *shape: int | tuple[int, ...]) -> np.ndarray | Reshaped:
        return reshaped(self.view, shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape)

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        import numpy as np

        if copy is False:
            raise ValueError("a Reshaped view cannot become an array without a copy")
        return np.asarray(np.reshape(self.view, self.shape), dtype=dtype)


def reshaped(array: np.ndarray | Reshaped, shape: tuple[int, ...]) -> np.ndarray | Reshaped:
    """``np.reshape(array, shape)`` as a view when numpy can make one, else a ``Reshaped`` (never a copy)."""
    import numpy as np

    view = array.view if isinstance(array, Reshaped) else np.asarray(array)
    shape = _resolved(view.size, tuple(shape))
    try:
        return np.reshape(view, shape, copy=False)
    except ValueError:  # no view has that shape: the reshape is made when the value is written
        return Reshaped(view, shape)


def _resolved(size: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with its -1 worked out, as numpy does, or numpy's error when it does not hold ``size``."""
    known = math.prod(n for n in shape if n != -1)
    if shape.count(-1) == 1 and known and size % known == 0:
        shape = tuple(size // known if n == -1 else n for n in shape)
    if shape.count(-1) or math.prod(shape) != size:
        raise ValueError(f"cannot reshape array of size {size} into shape {shape}")
    return tuple(int(n) for n in shape)


def copy_into(out: np.ndarray, value: np.ndarray | Reshaped) -> None:
    """``np.copyto(out, value)`` with numpy's unsafe casting (what ``np.asarray(value, dtype)`` does),
    by a lent kernel where one takes the arrays, a large reorder in blocks. ``out`` is C-ordered when
    ``value`` is a ``Reshaped``."""
    import numpy as np

    if isinstance(value, Reshaped):
        if tuple(out.shape) != value.shape:
            raise ValueError(f"cannot copy {value.shape} into {tuple(out.shape)}")
        # The same map, nothing made twice; copy=False: a reshape of a strided ``out`` would be a copy,
        # and the values would go into it instead of ``out``.
        out, value = np.reshape(out, value.view.shape, copy=False), value.view
    value = np.asarray(value)
    if out.shape != value.shape:  # numpy broadcasts it
        _copy(out, value)
        return
    for out_block, value_block in _blocks(out, value):
        _copy(out_block, value_block)


def _copy(out: np.ndarray, value: np.ndarray) -> None:
    import numpy as np

    if not any(kernel(out, value) for kernel in _kernels):
        np.copyto(out, value, casting="unsafe")


_BLOCK_BYTES = 12 << 20  # of the source per block: VGG16's first Dense copied fastest at ~128 of its 100 KB rows
_TILE_BYTES = 1 << 20  # per block where the axis sliced is neither side's innermost: one cache-sized slab or a few
_RUN = 64  # elements: a slice of the destination's last axis shorter than this writes it scattered


def _blocks(out: np.ndarray, value: np.ndarray):
    """``out`` and ``value`` in slices along one axis, where a transpose of 3 or more axes (the flatten
    reorder) would otherwise walk memory far apart on both sides. Unit axes go first (a stride of a
    unit axis says nothing, and torch's kernel does not merge them: VGG16's torch <- Keras reorder with a
    trailing one took 1.0 s, without it 0.5 s). Then:

    * when the destination's last axis walks ``value`` with its largest stride and is long, slices of it:
      each reads a few whole rows of the source that stay in cache while they are scattered (VGG16's
      first Dense torch -> Keras: 6-9 s whole, 2-3 s so, under load; 0.35 s against 0.78 s quiet);
    * else slices of the longest axis that is neither the destination's last nor the source's innermost,
      about 1 MB each: each is then a 2-d transpose of whole slabs (Keras -> torch: 0.2 s against 1.1 s)."""
    import numpy as np

    units = tuple(a for a, n in enumerate(value.shape) if n == 1)
    out, value = np.squeeze(out, axis=units), np.squeeze(value, axis=units)  # views, as they were
    last = value.ndim - 1
    if value.ndim < 3 or value.nbytes <= _BLOCK_BYTES:
        yield out, value
        return
    if value.strides[last] == max(value.strides) and value.shape[last] >= _RUN:
        axis, size = last, _BLOCK_BYTES
    else:
        inner = min(range(value.ndim), key=lambda a: abs(value.strides[a]))
        others = [a for a in range(value.ndim) if a not in (last, inner)]
        if not others:
            yield out, value
            return
        axis, size = max(others, key=lambda a: value.shape[a]), _TILE_BYTES
    step = max(1, size // (value.nbytes // value.shape[axis]))
    for start in range(0, value.shape[axis], step):
        where = (slice(None),) * axis + (slice(start, start + step),)
        yield out[where], value[where]

