"""Helpers shared by the tests of twin models (the same network in torch and in Keras)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def randomize_torch_state(model: nn.Module, rng: np.random.Generator, scale: float, count: int) -> None:
    """Every float parameter and buffer random, written with torch's own ``load_state_dict`` (not through
    modelshell): running variances in [0.5, 1.5] so batch norm stays sane, integer buffers (batch counts)
    set to ``count``."""
    state = model.state_dict()
    for name, t in state.items():
        if not t.is_floating_point():
            state[name] = torch.full_like(t, count)
        elif name.endswith("running_var"):
            state[name] = torch.from_numpy(rng.uniform(0.5, 1.5, t.shape).astype(np.float32))
        else:
            state[name] = torch.from_numpy(rng.normal(0.0, scale, t.shape).astype(np.float32))
    model.load_state_dict(state)
