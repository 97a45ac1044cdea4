"""The tutorial's LeNet-5, built in code in both frameworks (no download, no training).

Same architecture as ``../shared/reference``'s tutorial: torch ``nn.Sequential`` with state_dict keys
``0.weight ... 11.bias`` and the Keras ``Sequential`` with kernels ``(5,5,1,6) ... (84,10)``. The two
get independent, seeded random weights, so they compute different things until one is copied into the
other.
"""
from __future__ import annotations

from typing import Any

__all__ = ["torch_lenet5", "keras_lenet5", "TORCH_SEED", "KERAS_SEED"]

TORCH_SEED = 0
KERAS_SEED = 1


def torch_lenet5() -> Any:
    import torch
    from torch import nn

    torch.manual_seed(TORCH_SEED)
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=(5, 5), stride=1, padding=2),
        nn.Tanh(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5, stride=1, padding=0),
        nn.Tanh(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(16, 120, kernel_size=5, stride=1, padding=0),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(120, 84),
        nn.Tanh(),
        nn.Linear(84, 10),
        nn.Softmax(dim=1),
    ).eval()


def keras_lenet5() -> Any:
    import keras
    from keras import layers

    keras.utils.set_random_seed(KERAS_SEED)
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(6, (5, 5), padding="same", activation="tanh", name="conv2d"),
            layers.AveragePooling2D((2, 2), strides=2, name="average_pooling2d"),
            layers.Conv2D(16, (5, 5), activation="tanh", name="conv2d_1"),
            layers.AveragePooling2D((2, 2), strides=2, name="average_pooling2d_1"),
            layers.Conv2D(120, (5, 5), activation="tanh", name="conv2d_2"),
            layers.Flatten(name="flatten"),
            layers.Dense(84, activation="tanh", name="dense"),
            layers.Dense(10, activation="softmax", name="dense_1"),
        ],
        name="lenet5",
    )
