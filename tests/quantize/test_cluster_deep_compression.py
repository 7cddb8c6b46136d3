"""The bundled `deep_compression` recipe on the bundled MNIST task (slow: trains for ~1 minute)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_deep_compression_lenet300_meets_target():
    from deepshrink.api import compress
    from deepshrink.tasks.mnist import mnist_task

    task = mnist_task("lenet300")
    res = compress(task.model, task.example_inputs, "deep_compression", task=task)
    rep = res.report
    assert res.artifact is not None
    assert rep.compression_ratio >= 40
    assert rep.baseline.accuracy - rep.final.accuracy <= 0.003 + 1e-9
    pruned, clustered = rep.steps[0].extras, rep.steps[1].extras
    assert pruned["sparsity"] >= 0.95
    assert all(n <= 32 for n in clustered["distinct_values"].values())
