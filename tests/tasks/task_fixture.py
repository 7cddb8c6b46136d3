import torch
from torch import nn

from deepshrink.tasks import Task


def make():
    return Task(name="fixture", model=nn.Linear(3, 2), example_inputs=(torch.zeros(1, 3),))
