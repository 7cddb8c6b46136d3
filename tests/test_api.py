import pytest
import torch
from torch import nn

import deepshrink
from deepshrink.errors import ForwardError, RecipeError, TaskError
from deepshrink.tasks import Task
from tests.models import MLP


def _toy_task():
    torch.manual_seed(0)
    x = torch.randn(64, 16)
    y = (x[:, 0] > 0).long()
    data = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    model = MLP(d_out=2)

    def evaluate(m):
        with torch.no_grad():
            return float((m(x).argmax(1) == y).float().mean())

    return Task(name="toy", model=model, example_inputs=(x[:2],), train_data=data, eval_data=data, evaluate=evaluate)


def test_compress_runs_steps_on_a_copy_and_reports_each():
    task = _toy_task()
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    res = deepshrink.compress(task.model, task.example_inputs, [{"type": "finetune", "epochs": 3, "lr": 1e-2}],
                              task=task, latency_batch=8, repeats=5)
    assert all(torch.equal(before[k], v) for k, v in task.model.state_dict().items())
    rep = res.report
    assert [r.name for r in rep.rows()] == ["baseline", "1. finetune"]
    assert rep.final is rep.steps[-1]
    assert rep.baseline.size_bytes == (16 * 32 + 32 + 32 * 2 + 2) * 4
    assert rep.final.accuracy > rep.baseline.accuracy  # fine-tuning a random model on its task helps
    assert rep.baseline.latency_ms > 0 and rep.final.latency_batch == 8
    assert rep.speedup is not None and rep.compression_ratio > 0
    assert "fc1" in rep.histograms
    assert res.model is not task.model


def test_bad_recipe_fails_before_any_work():
    with pytest.raises(RecipeError, match="unknown step type"):
        deepshrink.compress(MLP(), MLP.example_inputs(), [{"type": "nope"}])


def test_forward_failure_is_typed():
    with pytest.raises(ForwardError):
        deepshrink.compress(MLP(), torch.zeros(1, 3), [], measure_latency=False)


def test_step_needing_a_task_says_so():
    with pytest.raises(TaskError, match="needs a task"):
        deepshrink.compress(MLP(), MLP.example_inputs(), [{"type": "finetune"}], measure_latency=False)


def test_compress_accepts_bare_tensor_and_module_only():
    res = deepshrink.compress(nn.Linear(4, 2), torch.zeros(1, 4), [], measure_latency=False)
    assert res.report.final is res.report.baseline


def test_artifact_survives_an_execution_only_step():
    """sparse_exec after encode changes kernels, not values: the .dsz stays the final artifact."""
    model = MLP(d_out=2)
    recipe = [{"type": "magnitude_prune", "sparsity": 0.95}, {"type": "encode"},
              {"type": "sparse_exec", "repeats": 5}]
    res = deepshrink.compress(model, MLP.example_inputs(), recipe, measure_latency=False)
    assert res.artifact is not None and res.artifact_suffix == ".dsz"
    assert res.report.final.size_bytes == len(res.artifact)
    assert res.report.compression_ratio == res.report.baseline.size_bytes / len(res.artifact)
    decoded = deepshrink.encode.loads(res.artifact, model=MLP(d_out=2))
    x = MLP.example_inputs()[0]
    torch.testing.assert_close(decoded(x), res.model(x), rtol=1e-5, atol=1e-6)


def test_a_weight_changing_step_after_encode_drops_the_stale_artifact():
    model = MLP(d_out=2)
    recipe = [{"type": "encode"}, {"type": "magnitude_prune", "sparsity": 0.5}]
    res = deepshrink.compress(model, MLP.example_inputs(), recipe, measure_latency=False)
    assert res.artifact is None
    assert "file" not in res.report.final.artifact or "no entropy" in res.report.final.artifact
