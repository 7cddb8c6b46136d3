from __future__ import annotations

import torch
from torch import nn

from deepshrink.distill.loop import fit
from deepshrink.prune.structured.regularizers import bn_l1, group_lasso
from deepshrink.recipe import Recipe, StepContext
from deepshrink.tasks import Task


def _task():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(16, 3))
    x = torch.randn(64, 3, 8, 8)
    y = (x.mean((1, 2, 3)) > 0).long()
    data = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    return Task(name="toy", model=m, example_inputs=(x[:2],), train_data=data, calib_data=[d[0] for d in data])


def test_bn_l1_shrinks_scales():
    t = _task()
    before = t.model[1].weight.abs().sum().item()
    fit(t.model, t.train_data, epochs=5, lr=1e-2, regularizer=bn_l1(t.model, 1e-1))
    assert t.model[1].weight.abs().sum().item() < before


def test_group_lasso_drives_groups_down():
    t = _task()
    reg = group_lasso(t.model, t.example_inputs, 1.0)
    v0 = float(reg(t.model))
    fit(t.model, t.train_data, epochs=5, lr=1e-2, regularizer=reg)
    assert float(reg(t.model)) < v0


def test_channel_prune_step_with_finetune():
    t = _task()
    r = Recipe.from_list([{"type": "channel_prune", "ratio": 0.5, "importance": "reconstruction", "round_to": 4,
                           "finetune_epochs": 1}])
    ctx = StepContext(example_inputs=t.example_inputs, task=t)
    out = r.steps[0].apply(t.model, ctx)
    assert out[0].out_channels == 8
    assert ctx.row_extras["pruned_groups"] == 1
    assert out.deepshrink_history


def test_recipe_validation():
    import pytest

    from deepshrink.errors import RecipeError

    for bad in ({"ratio": 1.0}, {"importance": "magic"}, {"scope": "local"}, {"round_to": 0}):
        with pytest.raises(RecipeError):
            Recipe.from_list([{"type": "channel_prune", **bad}])
    Recipe.from_list([{"type": "sparsity_train", "regularizer": "group_lasso"}, {"type": "layer_prune"}])
