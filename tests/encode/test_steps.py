"""The `encode` recipe step: artifact, row extras, bit-exact check, decoded model returned."""

from __future__ import annotations

import pytest
import torch

from deepshrink.encode import loads
from deepshrink.errors import RecipeError, VerificationError
from deepshrink.recipe import Recipe, StepContext
from tests.models import SmallCNN


def test_encode_step_on_clustered_lenet(clustered_lenet300):
    step = Recipe.from_list([{"type": "encode", "coder": "auto"}]).steps[0]
    ctx = StepContext(example_inputs=(torch.rand(4, 1, 28, 28),))
    out = step.apply(clustered_lenet300, ctx)
    assert out is not clustered_lenet300
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(out(x), clustered_lenet300(x))
    assert ctx.artifact[:4] == b"\x89DSZ" and ctx.artifact_suffix == ".dsz"
    ex = ctx.row_extras
    st = ex["stage_bytes"]
    assert ex["dsz_bytes"] == len(ctx.artifact) == st["coded"] < st["quantized"] < st["pruned"] < ex["fp32_bytes"]
    assert 0 < ex["bits_per_weight"] < 4 and abs(ex["coding_overhead"]) < 0.02 and ex["rebuildable"]
    assert torch.equal(loads(ctx.artifact)(x), out(x))


def test_encode_step_custom_model_uses_skeleton():
    m = SmallCNN().eval()
    ctx = StepContext(example_inputs=SmallCNN.example_inputs())
    out = Recipe.from_list([{"type": "encode", "stage_sizes": False}]).steps[0].apply(m, ctx)
    assert isinstance(out, SmallCNN) and not ctx.row_extras["rebuildable"]
    assert "stage_bytes" not in ctx.row_extras


def test_encode_step_detects_mismatch(monkeypatch):
    import deepshrink.encode.api as api

    m = SmallCNN().eval()
    real = api.loads

    def broken(data, model=None, **kw):
        out = real(data, model=model, **kw)
        with torch.no_grad():
            out.fc.bias.add_(1.0)
        return out

    monkeypatch.setattr(api, "loads", broken)
    with pytest.raises(VerificationError):
        Recipe.from_list([{"type": "encode"}]).steps[0].apply(m, StepContext(example_inputs=SmallCNN.example_inputs()))


def test_encode_step_rejects_bad_coder():
    with pytest.raises(RecipeError, match="coder"):
        Recipe.from_list([{"type": "encode", "coder": "zstd"}])
