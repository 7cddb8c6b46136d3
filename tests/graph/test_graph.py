from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink.errors import TraceError
from deepshrink.graph import DependencyGraph, capture, register_layer
from tests.models import SmallCNN


def test_capture_records_ops_and_shapes():
    g = capture(SmallCNN(), SmallCNN.example_inputs())
    targets = [n.target for n in g.nodes]
    assert "conv2d" in targets and "batch_norm" in targets and "linear" in targets
    assert g.outputs[0].shape == (2, 10)
    assert "conv1.weight" in g.state


def test_residual_couples_convs_into_one_group():
    g = DependencyGraph.build(SmallCNN(), SmallCNN.example_inputs())
    (grp,) = g.prunable_groups()
    keys = set(grp.members)
    assert {("conv1.weight", 0), ("conv2.weight", 0), ("conv2.weight", 1), ("fc.weight", 1), ("bn2.weight", 0)} <= keys
    assert grp.n_classes == 8


class Branchy(nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x


def test_data_dependent_control_flow_raises_trace_error():
    m = nn.Sequential(nn.Linear(4, 4), Branchy())
    with pytest.raises(TraceError, match="data-dependent"):
        DependencyGraph.build(m, torch.randn(2, 4))


def test_shape_dependent_control_flow_is_fine():
    class ShapeBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 6)
            self.out = nn.Linear(6, 2)

        def forward(self, x):
            y = self.fc(x)
            if y.shape[0] > 1:
                y = torch.relu(y)
            return self.out(y)

    g = DependencyGraph.build(ShapeBranch(), torch.randn(2, 4))
    assert len(g.prunable_groups()) == 1


def test_failing_forward_raises_trace_error():
    with pytest.raises(TraceError):
        capture(nn.Linear(4, 2), torch.randn(2, 5))


class Weird(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 2)

    def forward(self, x):
        return self.b(torch.fft.fft(self.a(x)).real)


def test_unknown_op_freezes_and_reports():
    g = DependencyGraph.build(Weird(), torch.randn(2, 4))
    assert not g.prunable_groups()
    assert any("fft" in n for n in g.notes)
    assert any("unknown op" in grp.reason for grp in g.frozen_groups())


class Scale(nn.Module):
    """A custom layer that the graph cannot see into (registered as a leaf)."""

    def __init__(self, c):
        super().__init__()
        self.w = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x):
        return x * self.w


def test_custom_layer_rule():
    @register_layer(Scale)
    def _rule(ctx, node, module):
        x, y = node.args[0], node.outputs[0]
        ctx.identity(x, y)
        ctx.link(ctx.param(module, "w"), 0, y, -1)

    m = nn.Sequential(nn.Linear(4, 8), Scale(8), nn.Linear(8, 2))
    g = DependencyGraph.build(m, torch.randn(3, 4))
    (grp,) = g.prunable_groups()
    assert ("1.w", 0) in grp.members
    import deepshrink.prune as P

    small = P.channels(m, torch.randn(3, 4), 0.5)
    assert small[1].w.shape == (4,)
    assert small(torch.randn(5, 4)).shape == (5, 2)


def test_attention_heads_group():
    pytest.importorskip("transformers")
    from tests.zoo.hf_models import bert

    m, x = bert()
    g = DependencyGraph.build(m.eval(), x)
    kinds = [grp.kind for grp in g.prunable_groups()]
    assert kinds.count("heads") == 2  # one per layer
    heads = [grp for grp in g.prunable_groups() if grp.kind == "heads"][0]
    assert heads.n_classes == 4
    q = [k for k in heads.members if k[0].endswith("query.weight")][0]
    assert all(len(idx) == 8 for idx in heads.members[q])  # head_dim rows per head
