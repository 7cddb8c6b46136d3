"""Dependency rules for recurrent layers (LSTM/GRU hidden units) and nn.MultiheadAttention.

LSTM/GRU are captured as the single ``lstm``/``gru`` call that ``nn.LSTM``/``nn.GRU`` make with
their flat weight list. Hidden unit ``k`` owns rows ``g*H + k`` of every gate block of ``w_ih``,
``w_hh`` and the biases, column ``k`` of ``w_hh``, and column ``k`` of the next layer's ``w_ih``;
``nn.LSTM`` requires one hidden size for all layers and directions, so unit ``k`` is one pruning
unit across them.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from .dependency import RuleContext, register_layer, register_op
from .node import OpNode, Value


@register_op("lstm", "gru", "rnn_tanh", "rnn_relu")
def _rnn(ctx: RuleContext, node: OpNode) -> None:
    x = node.args[0]
    if not isinstance(x, Value) or not isinstance(node.args[2], (list, tuple)):
        ctx.freeze_all(node, "packed-sequence recurrent call")
        return
    hx = node.args[1]
    params = [p for p in node.args[2] if isinstance(p, Value)]
    has_bias, layers = bool(node.args[3]), int(node.args[4])
    bidir, batch_first = bool(node.args[7]), bool(node.args[8])
    gates = {"lstm": 4, "gru": 3}.get(node.target, 1)
    dirs = 2 if bidir else 1
    per = 4 if has_bias else 2
    if len(params) != layers * dirs * per:
        ctx.freeze_all(node, "recurrent layer with projections (proj_size) is not supported")
        return
    w_hh0 = params[1]
    hidden = w_hh0.shape[1]
    if w_hh0.shape[0] != gates * hidden:
        ctx.freeze_all(node, "unexpected recurrent weight layout")
        return
    # a virtual anchor: slot k of dim 1 of w_hh of layer 0 stands for hidden unit k
    anchor = (w_hh0, 1)
    rows = np.arange(gates * hidden)

    def unit(v: Value, d: int, idx: np.ndarray) -> None:
        ctx.link(v, d, anchor[0], anchor[1], a_idx=np.arange(len(idx)), b_idx=idx)

    out = node.outputs[0]
    for layer in range(layers):
        for dr in range(dirs):
            ps = params[(layer * dirs + dr) * per:(layer * dirs + dr + 1) * per]
            w_ih, w_hh = ps[0], ps[1]
            unit(w_ih, 0, rows % hidden)
            unit(w_hh, 0, rows % hidden)
            unit(w_hh, 1, np.arange(hidden))
            for b in ps[2:]:
                unit(b, 0, rows % hidden)
            if layer == 0:
                ctx.link(w_ih, 1, x, -1)
            else:
                unit(w_ih, 1, np.arange(w_ih.shape[1]) % hidden)
    # input/output: (T, B, F) or (B, T, F), unbatched (T, F)
    for d in range(x.ndim - 1):
        ctx.link(x, d, out, d)
    unit(out, -1, np.arange(out.shape[-1]) % hidden)
    states = list(node.outputs[1:])
    hxs = [h for h in (hx if isinstance(hx, (tuple, list)) else [hx]) if isinstance(h, Value)]
    for h in states + hxs:
        ctx.freeze(h, 0, "layers x directions of a recurrent state")
        if h.ndim == 3:
            ctx.link(h, 1, x, 0 if batch_first else 1)
        unit(h, -1, np.arange(h.shape[-1]))


@register_layer(nn.MultiheadAttention)
def _mha(ctx: RuleContext, node: OpNode, module: nn.Module) -> None:
    """nn.MultiheadAttention: heads are pruned (the module is swapped for a subclass that allows
    ``num_heads * head_dim != embed_dim``); the embedding dim follows the surrounding residual
    stream when q, k and v share it."""
    from .mha import mha_rule

    mha_rule(ctx, node, module)
