"""The bundled MNIST models: LeNet-300-100 and LeNet-5 (Caffe variant, as in Deep Compression).

Both take pixels scaled to [0, 1] as float32 ``(N, 1, 28, 28)``; the dataset normalization lives
inside the model (a fixed affine layer), so a decoded model can be evaluated by anyone.

Example:
    >>> import torch
    >>> from deepshrink.tasks.models import LeNet300
    >>> LeNet300()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

# Mean / std of MNIST pixels in [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


class Normalize(nn.Module):
    """Fixed `(x - mean) / std` so that the model takes raw [0, 1] pixels."""

    def __init__(self, mean: float = MNIST_MEAN, std: float = MNIST_STD):
        super().__init__()
        self.mean = mean
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


def LeNet300() -> nn.Sequential:
    """LeNet-300-100: 784-300-100-10 fully connected, 266,610 parameters."""
    return nn.Sequential(
        Normalize(),
        nn.Flatten(),
        nn.Linear(784, 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


def LeNet5() -> nn.Sequential:
    """LeNet-5 (Caffe): conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc 10; 431,080 parameters."""
    return nn.Sequential(
        Normalize(),
        nn.Conv2d(1, 20, 5),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(800, 500),
        nn.ReLU(),
        nn.Linear(500, 10),
    )


BUNDLED_MODELS = {"lenet300": LeNet300, "lenet5": LeNet5}
