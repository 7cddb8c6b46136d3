import torch
from torch import nn

from deepshrink.measure import profile
from tests.models import SmallCNN


def test_linear_macs_and_bytes_by_hand():
    p = profile(nn.Linear(10, 5), torch.zeros(3, 10))
    assert p.params == 10 * 5 + 5
    assert p.macs == 3 * 10 * 5  # batch x in x out
    assert p.size_bytes == (10 * 5 + 5) * 4


def test_conv2d_macs_by_hand():
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=0, bias=False)
    p = profile(conv, torch.zeros(1, 3, 10, 10))
    assert p.macs == 8 * 8 * 8 * (3 * 3 * 3)  # out_c x out_h x out_w x (in_c x k x k)
    assert p.params == 8 * 3 * 3 * 3


def test_grouped_conv_macs_by_hand():
    conv = nn.Conv2d(8, 8, kernel_size=3, padding=1, groups=8, bias=False)
    p = profile(conv, torch.zeros(1, 8, 6, 6))
    assert p.macs == 8 * 6 * 6 * 9


def test_per_layer_rows_and_kind_split():
    m = SmallCNN()
    p = profile(m, m.example_inputs())
    names = [r.name for r in p.layers]
    assert names == ["conv1", "bn1", "conv2", "bn2", "fc"]
    assert sum(r.params for r in p.layers) == p.params
    kinds = p.by_kind()
    assert kinds["conv"]["macs_share"] > 0.99
    assert abs(sum(k["params_share"] for k in kinds.values()) - 1.0) < 1e-9
    assert p.macs == sum(r.macs for r in p.layers)


def test_lenet5_matches_the_paper_parameter_count():
    from deepshrink.tasks.models import LeNet5, LeNet300

    assert profile(LeNet300(), torch.zeros(1, 1, 28, 28)).params == 266_610
    assert profile(LeNet5(), torch.zeros(1, 1, 28, 28)).params == 431_080


def test_profile_does_not_change_the_model():
    m = SmallCNN()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    profile(m, m.example_inputs())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_forward_failure_is_a_typed_error():
    import pytest

    from deepshrink.errors import ForwardError

    with pytest.raises(ForwardError, match="forward failed"):
        profile(nn.Linear(10, 5), torch.zeros(1, 7))


def test_multihead_attention_macs_are_counted_in_eval_mode():
    """Eval-mode nn.MultiheadAttention takes a fused fast path the flop counter cannot see."""
    L, N, E, H = 6, 2, 32, 4
    attn = nn.MultiheadAttention(E, H, batch_first=True).eval()

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    p = profile(Wrap(), torch.randn(N, L, E))
    # q,k,v and out projections + scores (QK^T) + weighted sum (AV)
    expected = N * L * E * E * 4 + 2 * N * L * L * E
    assert p.macs == expected
    assert torch.backends.mha.get_fastpath_enabled()  # the switch is restored
