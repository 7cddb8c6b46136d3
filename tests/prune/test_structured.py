from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import deepshrink.prune as P
from deepshrink.errors import InputError, VerificationError
from deepshrink.prune.structured.verify import check_exact
from tests.models import MLP, SmallCNN


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()


X = torch.randn(4, 3, 12, 12)


def test_input_untouched_and_shapes():
    m = _cnn()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    small = P.channels(m, X, 0.5)
    assert small[0].out_channels == 8 and small[3].in_channels == 8 and small[3].out_channels == 16
    assert small[8].in_features == 16
    assert small(X).shape == m(X).shape
    assert small(torch.randn(1, 3, 20, 20)).shape == (1, 10)  # other batch and image sizes
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])


def test_zero_channel_removal_is_exact():
    m = _cnn()
    with torch.no_grad():  # make channels 0..7 of conv1 contribute nothing
        m[3].weight[:, :8] = 0
    small = P.channels(m, X, 0.5, exclude=["3"] if False else ())
    assert small.deepshrink_report["exact_check"] is not None
    # prune exactly the dead channels by giving them the lowest score (l1 of consumer columns is 0)
    m2 = _cnn()
    with torch.no_grad():
        m2[0].weight[:8] = 0
        m2[0].bias[:8] = 0
        m2[1].weight[:8] = 0
        m2[1].bias[:8] = 0
        m2[3].weight[:, :8] = 0
    small2 = P.channels(m2, X, 0.5, importance="l1", overrides={"3": 0.0}, exclude=())
    torch.testing.assert_close(small2(X), m2(X), rtol=1e-5, atol=1e-5)


def test_verification_catches_wrong_slicing():
    m = _cnn()
    small = P.channels(m, X, 0.5)
    with torch.no_grad():
        small[3].weight.mul_(1.5)  # a pruned model that computes something else
    with pytest.raises(VerificationError):
        check_exact(m, small, (X,))


def test_replay_state_dict_roundtrip_json():
    m = SmallCNN().eval()
    x = SmallCNN.example_inputs()
    small = P.channels(m, x, 0.5)
    hist = json.loads(json.dumps(small.deepshrink_history))
    again = P.replay(SmallCNN(), hist)
    again.load_state_dict(small.state_dict())
    torch.testing.assert_close(again.eval()(*x), small(*x))


def test_replay_rejects_mismatched_architecture():
    small = P.channels(MLP(), MLP.example_inputs(), 0.5)
    with pytest.raises(InputError):
        P.replay(MLP(hidden=40), small.deepshrink_history)


def test_ratio_that_empties_a_layer():
    with pytest.raises(InputError, match="empty|remove every"):
        P.channels(nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 1)), torch.randn(2, 4), 0.9)
    with pytest.raises(InputError):
        P.channels(MLP(), MLP.example_inputs(), 1.0)


def test_exclude_matching_nothing_raises():
    with pytest.raises(InputError, match="matches no module"):
        P.channels(MLP(), MLP.example_inputs(), 0.5, exclude=["fc9"])


def test_exclude_freezes_group_and_reports():
    small = P.channels(MLP(), MLP.example_inputs(), 0.5, exclude=["re:fc2"])
    assert small.fc1.out_features == 32
    assert any("excluded" in s["reason"] for s in small.deepshrink_report["skipped"])


def test_round_to_and_global_scope():
    m = _cnn()
    small = P.channels(m, X, 0.4, round_to=8)
    assert small[0].out_channels % 8 == 0 and small[3].out_channels % 8 == 0
    g = P.channels(m, X, 0.5, scope="global")
    total = g[0].out_channels + g[3].out_channels
    assert total == 24  # half of 16 + 32 overall
    assert g[0].out_channels >= 1 and g[3].out_channels >= 1


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale", "fpgm", "random", "taylor", "obd", "apoz",
                                        "reconstruction"])
def test_every_importance_runs(importance):
    m = _cnn()
    data = [(torch.randn(8, 3, 12, 12), torch.randint(0, 10, (8,))) for _ in range(2)]
    small = P.channels(m, X, 0.5, importance=importance, calib_data=data)
    assert small[0].out_channels == 8
    assert small(X).shape == (4, 10)


def test_data_importance_needs_calib_data():
    with pytest.raises(InputError, match="calib_data"):
        P.channels(_cnn(), X, 0.5, importance="taylor")


def test_reconstruction_beats_magnitude_without_finetune():
    torch.manual_seed(0)
    # a linear teacher with correlated hidden features: redundancy that reconstruction can exploit
    m = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    base = torch.randn(512, 4)
    x = torch.cat([base @ torch.randn(4, 16), 0.05 * torch.randn(512, 0)], 1)
    calib = [x[i:i + 64] for i in range(0, 256, 64)]
    test = x[256:]
    ref = m(test)
    err = {}
    for imp in ("l2", "reconstruction"):
        small = P.channels(m, x[:2], 0.5, importance=imp, calib_data=calib)
        err[imp] = float((small(test) - ref).pow(2).mean() / ref.pow(2).mean())
    assert err["reconstruction"] < 0.5 * err["l2"]


def test_kinds_filter():
    pytest.importorskip("transformers")
    from tests.zoo.hf_models import bert

    m, x = bert()
    small = P.channels(m.eval(), x, 0.5, kinds=["heads"])
    kinds = {r["kind"] for r in small.deepshrink_report["pruned"]}
    assert kinds == {"heads"}
    attn = small.model.encoder.layer[0].attention.self
    assert attn.query.out_features == 16 and small.model.encoder.layer[0].intermediate.dense.out_features == 64
    assert small.deepshrink_report["exact_check"] is not None  # heads removal is checked exactly


def test_layers_removes_blocks_and_replays():
    from deepshrink.prune.structured.layers import SkippedBlock

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(8, 8)

        def forward(self, x):
            return x + self.f(x)

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), *[Res() for _ in range(4)], nn.Linear(8, 2)).eval()
    x = torch.randn(3, 4)
    small = P.layers(m, x, 0.5)
    assert sum(isinstance(b, SkippedBlock) for b in small) == 2
    again = P.replay(m, small.deepshrink_history)
    again.load_state_dict(small.state_dict())
    torch.testing.assert_close(again(x), small(x))
