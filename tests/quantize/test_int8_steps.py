"""Recipe steps of the quantization capability."""

from __future__ import annotations

import pytest
import torch

from deepshrink.errors import RecipeError
from deepshrink.recipe import Recipe, StepContext
from deepshrink.tasks import Task
from tests.models import MLP


def _ctx():
    torch.manual_seed(0)
    m = MLP().eval()
    data = [(torch.randn(16, 16), torch.randint(0, 4, (16,))) for _ in range(2)]
    task = Task(name="toy", model=m, example_inputs=MLP.example_inputs(), train_data=data, calib_data=data,
                eval_data=data)
    return m, StepContext(example_inputs=MLP.example_inputs(), task=task, original=m)


def test_recipe_round_trip_and_validation():
    r = Recipe.from_list([
        {"type": "int8", "backend": "onnxruntime", "calibration": "entropy", "exclude": ["fc2"]},
        {"type": "fp16"}, {"type": "bf16"}, {"type": "qat", "epochs": 0.5},
        {"type": "binarize", "method": "lab"}, {"type": "ternarize", "train_epochs": 1},
        {"type": "fixed_point", "avg_bits": 3.5}, {"type": "product_quantize", "subvector": 8},
    ])
    assert Recipe.from_json(r.to_json()) == r
    with pytest.raises(RecipeError, match="calibration"):
        Recipe.from_list([{"type": "int8", "calibration": "median"}])
    with pytest.raises(RecipeError):
        Recipe.from_list([{"type": "int8", "min_cosine": 1.5}])


def test_int8_step_static_records_fallbacks():
    m, ctx = _ctx()
    step = Recipe.from_list([{"type": "int8", "engine": "fbgemm", "fallback_slow": False,
                              "exclude": ["fc2"], "keep_fp32_if_slower": False}]).steps[0]
    q = step.apply(m, ctx)
    assert q.quant_info.mode == "static"
    assert ctx.row_extras["int8_mode"] == "static" and ctx.row_extras["int8_layers"] == 1
    assert any(s["layer"] == "fc2" for s in ctx.skipped)


def test_int8_step_keeps_fp32_when_int8_is_slower(monkeypatch):
    """A quantized model is never slower than fp32 in the result: the step says so and keeps fp32."""
    import itertools

    from deepshrink.quantize.int8 import api

    timings = itertools.cycle([1.0, 2.0])  # check_speed times fp32 first, then int8
    monkeypatch.setattr(api, "best_ms", lambda fn, repeats=15, threads=1: (fn(), next(timings))[1])
    m, ctx = _ctx()
    step = Recipe.from_list([{"type": "int8", "engine": "fbgemm", "fallback_slow": False}]).steps[0]
    out = step.apply(m, ctx)
    assert out is m and ctx.row_extras["int8_kept_fp32"] is True
    assert any("slower than fp32" in s["reason"] and "kept the fp32 model" in s["reason"] for s in ctx.skipped)
    m, ctx = _ctx()
    off = Recipe.from_list([{"type": "int8", "engine": "fbgemm", "fallback_slow": False,
                             "keep_fp32_if_slower": False}]).steps[0]
    q = off.apply(m, ctx)
    assert q.quant_info.slower_than_fp32 is True and "int8_kept_fp32" not in ctx.row_extras


@pytest.mark.parametrize("spec", [
    {"type": "int8", "dynamic": True, "fallback_slow": False, "engine": "fbgemm"},
    {"type": "bf16"}, {"type": "fixed_point", "bits": 3},
    {"type": "binarize", "keep_first_last": False}, {"type": "ternarize", "keep_first_last": False},
    {"type": "product_quantize", "subvector": 4, "centroids": 8},
])
def test_steps_apply(spec):
    m, ctx = _ctx()
    out = Recipe.from_list([spec]).steps[0].apply(m, ctx)
    assert out(torch.randn(3, 16)).shape == (3, 4)
