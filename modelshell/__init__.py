"""modelshell: look inside deep-learning models and move weights between PyTorch and Keras.

Importing this package must stay cheap: no torch, no TensorFlow. A framework is imported the first time
a model of that framework is loaded or touched (see ``modelshell.frameworks``).
"""
from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
