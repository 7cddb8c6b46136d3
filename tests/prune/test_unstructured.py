"""Unstructured pruning: masks that survive training, scopes, granularities, layer types, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from deepshrink.errors import InputError, RecipeError
from deepshrink.prune import finalize, magnitude, sparsity_report
from deepshrink.prune.unstructured import (
    gradual_prune,
    iterative_prune,
    magnitude_,
    masks,
    polynomial_sparsity,
)
from tests.models import MLP, SmallCNN


def _data(n_batches=4, d_in=16, n_cls=4, bs=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(bs, d_in, generator=g), torch.randint(0, n_cls, (bs,), generator=g)) for _ in range(n_batches)]


def _zeros(model):
    return {k: (v == 0) for k, v in model.state_dict().items() if k.endswith("weight")}


def test_input_untouched_and_state_dict_keys_unchanged():
    torch.manual_seed(0)
    m = MLP()
    before = copy.deepcopy(m.state_dict())
    p = magnitude(m, 0.7)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert list(p.state_dict()) == list(m.state_dict())
    m2 = MLP()
    m2.load_state_dict(p.state_dict())  # strict load works: masks are not in the state_dict


@pytest.mark.parametrize("opt_name", ["adam", "sgd", "adamw"])
def test_masks_survive_training_with_momentum_and_weight_decay(opt_name):
    torch.manual_seed(0)
    p = magnitude(MLP(), 0.8)
    pruned = {k: ~v for k, v in masks(p).items()}
    # a user's own loop: pre-existing optimizer state would revive weights without the hooks
    opt = {
        "adam": lambda ps: torch.optim.Adam(ps, lr=0.05, weight_decay=0.1),
        "sgd": lambda ps: torch.optim.SGD(ps, lr=0.5, momentum=0.9, weight_decay=0.1),
        "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.1),
    }[opt_name](p.parameters())
    for x, y in _data(6) * 2:
        opt.zero_grad()
        nn.functional.cross_entropy(p(x), y).backward()
        opt.step()
        for name, pm in pruned.items():  # exactly zero right after every step, before any forward
            w = p.get_submodule(name.rsplit(".", 1)[0]).weight
            assert bool((w[pm] == 0).all())
    w_kept = p.fc1.weight[~pruned["fc1.weight"]]
    assert bool((w_kept != 0).all())  # kept weights did train
    final = finalize(p)
    assert not masks(final) and not list(final.buffers())
    assert sorted(final.state_dict()) == sorted(MLP().state_dict())
    assert all(bool((final.get_submodule(n.rsplit(".", 1)[0]).weight[pm] == 0).all()) for n, pm in pruned.items())


def test_masks_survive_deepcopy_and_load_state_dict():
    torch.manual_seed(0)
    p = magnitude(MLP(), 0.5)
    q = copy.deepcopy(p)
    opt = torch.optim.Adam(q.parameters(), lr=0.1)
    x, y = _data(1)[0]
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(q(x), y).backward()
        opt.step()
    assert torch.equal(q.fc1.weight == 0, ~q.fc1.weight_mask)
    q.load_state_dict(MLP().state_dict())  # dense weights loaded into a masked model
    q(x)
    assert torch.equal(q.fc1.weight == 0, ~q.fc1.weight_mask)


def test_global_vs_layer_scope():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(100, 100), nn.Linear(100, 100))
    with torch.no_grad():
        m[1].weight.mul_(10)  # second layer's weights are larger
    g = sparsity_report(magnitude(m, 0.5, scope="global"))
    lay = sparsity_report(magnitude(m, 0.5, scope="layer"))
    assert g["sparsity"] == pytest.approx(0.5, abs=1e-4)
    assert g["layers"]["0.weight"] > 0.85 and g["layers"]["1.weight"] < 0.15  # class-blind ranking
    assert lay["layers"] == {"0.weight": pytest.approx(0.5), "1.weight": pytest.approx(0.5)}


def test_overrides_exclude_and_include():
    m = nn.Sequential(nn.Linear(50, 48), nn.ReLU(), nn.Linear(48, 48), nn.Linear(48, 4))
    r = sparsity_report(magnitude(m, 0.6, scope="layer", overrides={"0": 0.9}, exclude=["3"]))["layers"]
    assert r["0.weight"] == pytest.approx(0.9, abs=1e-3) and r["2.weight"] == pytest.approx(0.6, abs=5e-3)
    assert r["3.weight"] == 0
    r = sparsity_report(magnitude(m, 0.6, include=["type:Linear"], exclude=["re:[02]"]))["layers"]
    assert r["0.weight"] == 0 and r["3.weight"] == pytest.approx(0.6, abs=5e-3)
    r = sparsity_report(magnitude(m, 0.6, overrides={"2": {"sparsity": 0.5, "granularity": "2:4"}}))["layers"]
    assert r["2.weight"] == pytest.approx(0.5)


def test_nm_pattern():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(32, 8), nn.Conv2d(8, 4, 3))
    p = magnitude(m, 0.5, granularity="2:4", scope="layer")
    groups = (p[0].weight != 0).reshape(8, 8, 4).sum(-1)
    assert bool((groups == 2).all())
    # each kept pair is the two largest of its group of four
    w = m[0].weight.detach().abs().reshape(8, 8, 4)
    top2 = torch.topk(w, 2, dim=-1).indices
    kept = (p[0].weight != 0).reshape(8, 8, 4)
    assert bool(kept.gather(-1, top2).all())
    conv_groups = (p[1].weight != 0).permute(0, 2, 3, 1).reshape(-1, 4).sum(-1)  # along input channels
    assert bool((conv_groups == 2).all())


def test_balanced_blocks_have_equal_nonzeros():
    torch.manual_seed(0)
    m = nn.Linear(40, 64)
    with torch.no_grad():
        m.weight[:16] *= 100  # rows 0-15 would keep everything under plain magnitude pruning
    p = magnitude(m, 0.75, granularity="balanced:8", scope="layer")
    nnz = [int((p.weight[b::8] != 0).sum()) for b in range(8)]
    assert len(set(nnz)) == 1 and nnz[0] == int(0.25 * 8 * 40)


def test_vector_and_kernel_granularity():
    torch.manual_seed(0)
    cnn = SmallCNN()
    p = magnitude(cnn, 0.5, scope="layer", granularity="kernel", include=["conv2"])
    k = p.conv2.weight.reshape(64, 9)
    assert bool(((k == 0).all(1) | (k != 0).all(1)).all())  # whole kernels
    assert float((k == 0).all(1).float().mean()) == pytest.approx(0.5)
    p = magnitude(cnn, 0.5, scope="layer", granularity="vector", include=["conv2", "fc"])
    rows = p.conv2.weight.reshape(-1, 3)
    assert bool(((rows == 0).all(1) | (rows != 0).all(1)).all())
    assert float((p.fc.weight == 0).all(1).float().mean()) == pytest.approx(0.5)  # Linear: whole rows


def test_embedding_lstm_gru():
    torch.manual_seed(0)

    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.lstm = nn.LSTM(16, 24, batch_first=True)
            self.gru = nn.GRU(24, 8, batch_first=True, bidirectional=True)

        def forward(self, ids):
            return self.gru(self.lstm(self.emb(ids))[0])[0]

    m = Seq()
    p = magnitude(m, 0.6, scope="layer")
    rep = sparsity_report(p)["layers"]
    expected = {"emb.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "gru.weight_ih_l0", "gru.weight_hh_l0",
                "gru.weight_ih_l0_reverse", "gru.weight_hh_l0_reverse"}
    assert set(rep) == expected
    assert all(v == pytest.approx(0.6, abs=5e-3) for v in rep.values())
    ids = torch.randint(0, 50, (3, 7))
    opt = torch.optim.Adam(p.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        p(ids).pow(2).mean().backward()
        opt.step()
    assert all(v == pytest.approx(0.6, abs=5e-3) for v in sparsity_report(p)["layers"].values())
    assert p(torch.randint(0, 50, (5, 2))).shape == (5, 2, 16)  # any batch and sequence length


def test_in_place_variant_and_finalize_exact_zeros():
    m = nn.Linear(10, 10)
    out = magnitude_(m, 0.9)
    assert out is m and int((m.weight == 0).sum()) == 90
    finalize(m)
    assert not hasattr(m, "weight_mask") and int((m.weight == 0).sum()) == 90


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "half", True])
def test_bad_sparsity_raises(bad):
    with pytest.raises(InputError):
        magnitude(MLP(), bad)


def test_bad_arguments_raise():
    with pytest.raises(InputError, match="scope"):
        magnitude(MLP(), 0.5, scope="everything")
    with pytest.raises(InputError, match="granularity"):
        magnitude(MLP(), 0.5, granularity="3:2")
    with pytest.raises(InputError, match="matches no module"):
        magnitude(MLP(), 0.5, exclude=["nope"])
    with pytest.raises(InputError, match="no prunable layers"):
        magnitude(nn.Sequential(nn.ReLU()), 0.5)


def test_too_small_or_mismatched_layers_are_skipped_not_silently():
    from deepshrink.prune.unstructured import prune_by_scores_

    m = nn.Sequential(nn.Linear(6, 3), nn.Linear(3, 2))
    rows = prune_by_scores_(m, 0.1, lambda t: t.tensor.abs(), scope="layer")
    skipped = [r for r in rows if "skipped" in r]
    assert [r["layer"] for r in skipped] == ["1.weight"] and "nothing to prune" in skipped[0]["skipped"]
    rows = prune_by_scores_(nn.Sequential(nn.Linear(6, 3)), 0.5, lambda t: t.tensor.abs(), granularity="2:4")
    assert "divisible" in rows[0]["skipped"]


def test_polynomial_schedule():
    assert polynomial_sparsity(0, 0.9, end=100) == 0
    assert polynomial_sparsity(100, 0.9, end=100) == pytest.approx(0.9)
    vals = [polynomial_sparsity(t, 0.9, end=100) for t in range(0, 101, 10)]
    assert vals == sorted(vals)
    assert vals[1] - vals[0] > vals[-1] - vals[-2]  # prunes fast early, slowly late


def test_gradual_and_iterative_reach_target_and_keep_training():
    torch.manual_seed(0)
    data = _data(8)
    m = MLP()
    g = gradual_prune(m, 0.8, data, epochs=3, overrides={"fc2": 0.5}, lr=1e-2)
    rep = sparsity_report(g)["layers"]
    assert rep["fc1.weight"] == pytest.approx(0.8, abs=0.01) and rep["fc2.weight"] == pytest.approx(0.5, abs=0.01)
    assert not torch.equal(g.fc1.weight[g.fc1.weight != 0], m.fc1.weight[g.fc1.weight != 0])  # trained
    it = iterative_prune(m, 0.8, data, rounds=3, epochs_per_round=1, scope="layer")
    assert sparsity_report(it)["sparsity"] == pytest.approx(0.8, abs=0.01)


def test_recipe_steps_validate():
    from deepshrink.recipe import Recipe

    r = Recipe.from_list([
        {"type": "magnitude_prune", "sparsity": 0.9, "overrides": {"fc1": 0.95}, "schedule": "gradual",
         "retrain_epochs": 2},
        {"type": "obs_prune", "sparsity": 0.5},
        {"type": "obd_prune", "sparsity": 0.5},
        {"type": "apoz_prune", "ratio": 0.2},
        {"type": "sparse_exec", "batch_size": 1},
    ])
    assert Recipe.from_json(r.to_json()) == r
    for bad in (
        {"type": "magnitude_prune", "sparsity": 1.2},
        {"type": "magnitude_prune", "granularity": "5:4"},
        {"type": "magnitude_prune", "schedule": "gradual"},
        {"type": "magnitude_prune", "overrides": {"fc1": 2}},
        {"type": "sparse_exec", "formats": ["coo"]},
    ):
        with pytest.raises(RecipeError):
            Recipe.from_list([bad])


def test_magnitude_prune_step_with_retraining():
    from deepshrink.api import compress
    from deepshrink.tasks import Task

    torch.manual_seed(0)
    data = _data(4)
    task = Task(name="toy", model=MLP(), example_inputs=MLP.example_inputs(), train_data=data, eval_data=data,
                evaluate=lambda m: 0.5)
    res = compress(task.model, task.example_inputs,
                   [{"type": "magnitude_prune", "sparsity": 0.75, "retrain_epochs": 1, "schedule": "iterative",
                     "rounds": 2}], task=task)
    step = res.report.steps[0]
    assert step.extras["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert not masks(res.model)  # finalized: plain tensors


def test_tied_weights_are_pruned_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.out = nn.Linear(8, 20, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, ids):
            return self.out(self.emb(ids))

    p = magnitude(Tied(), 0.5)
    ids = torch.randint(0, 20, (2, 5))
    opt = torch.optim.Adam(p.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        p(ids).pow(2).mean().backward()
        opt.step()
    assert float((p.emb.weight == 0).float().mean()) == pytest.approx(0.5)
    assert p.out.weight is p.emb.weight and not hasattr(p.out, "weight_mask")
