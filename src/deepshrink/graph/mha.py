"""nn.MultiheadAttention: head pruning.

``nn.MultiheadAttention`` insists on ``num_heads * head_dim == embed_dim``, so pruning heads while
keeping the model width needs a module that allows an inner width different from ``embed_dim``.
`PrunableMultiheadAttention` is a drop-in subclass (same parameters and state_dict keys) that
computes attention with ``num_heads`` heads of ``head_dim`` each; the pruner swaps a pruned
module's class to it (recorded in the history, so `replay` does the same).

Example:
    >>> import torch
    >>> m = PrunableMultiheadAttention(8, 2, batch_first=True)
    >>> x = torch.randn(1, 3, 8)
    >>> torch.allclose(m(x, x, x)[0], torch.nn.MultiheadAttention.forward(m, x, x, x)[0], atol=1e-6)
    True
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .dependency import RuleContext
from .node import OpNode, Value

# Attributes of attention-style modules that hold a head count or a width baked into reshapes
# (the graph reads them to find head structure; pruning rewrites them).
HEAD_ATTRS = ("num_heads", "num_attention_heads", "n_heads", "n_head", "all_head_size", "split_size",
              "inner_dim", "num_key_value_heads", "head_count")


class PrunableMultiheadAttention(nn.MultiheadAttention):
    """`nn.MultiheadAttention` whose heads may be fewer than ``embed_dim // head_dim``."""

    def after_swap(self) -> None:
        """Called after ``module.__class__`` was swapped to this class."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if self.bias_k is not None or self.add_zero_attn:
            raise NotImplementedError("pruned attention with bias_k/add_zero_attn is not supported")
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if self.batch_first and batched:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        tgt, bsz, _ = query.shape
        src = key.shape[0]
        h, d = self.num_heads, self.head_dim
        inner = h * d
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.split(inner, 0)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.split(inner, 0)
        q = F.linear(query, w_q, b_q).reshape(tgt, bsz * h, d).transpose(0, 1)
        k = F.linear(key, w_k, b_k).reshape(src, bsz * h, d).transpose(0, 1)
        v = F.linear(value, w_v, b_v).reshape(src, bsz * h, d).transpose(0, 1)
        mask = None
        if attn_mask is not None:
            mask = attn_mask if attn_mask.dim() == 3 else attn_mask.unsqueeze(0)
            if mask.dtype == torch.bool:
                mask = torch.zeros_like(mask, dtype=q.dtype).masked_fill(mask, float("-inf"))
        if key_padding_mask is not None:
            kpm = key_padding_mask.view(bsz, 1, 1, src).expand(-1, h, -1, -1).reshape(bsz * h, 1, src)
            kpm = torch.zeros_like(kpm, dtype=q.dtype).masked_fill(kpm, float("-inf")) if kpm.dtype == torch.bool \
                else kpm
            mask = kpm if mask is None else mask + kpm
        scores = torch.bmm(q, k.transpose(1, 2)) / (d ** 0.5)
        if is_causal and mask is None:
            causal = torch.ones(tgt, src, dtype=torch.bool, device=q.device).triu(1)
            scores = scores.masked_fill(causal, float("-inf"))
        if mask is not None:
            scores = scores + mask
        attn = torch.softmax(scores, -1)
        if self.training and self.dropout > 0:
            attn = F.dropout(attn, self.dropout)
        out = torch.bmm(attn, v).transpose(0, 1).reshape(tgt, bsz, inner)
        out = self.out_proj(out)
        if self.batch_first and batched:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(1)
        weights = None
        if need_weights:
            weights = attn.view(bsz, h, tgt, src)
            if average_attn_weights:
                weights = weights.mean(1)
            if not batched:
                weights = weights.squeeze(0)
        return out, weights


def mha_rule(ctx: RuleContext, node: OpNode, module: nn.MultiheadAttention) -> None:
    """Heads of nn.MultiheadAttention; embed dim coupled to the query/output channels."""
    query = node.arg(0, "query")
    key, value = node.arg(1, "key"), node.arg(2, "value")
    out = node.outputs[0]
    if module.bias_k is not None or module.add_zero_attn or not isinstance(query, Value):
        ctx.freeze_all(node, "nn.MultiheadAttention with bias_k/add_zero_attn")
        return
    p = {n: ctx.param(module, n) for n in ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight",
                                           "v_proj_weight")}
    ow, ob = ctx.param(module.out_proj, "weight"), ctx.param(module.out_proj, "bias")
    h = module.num_heads
    inner = ow.shape[1]
    d = inner // h
    head_anchor = (np.arange(inner) // d) * d  # first column of each head in out_proj
    ctx.link(ow, 1, ow, 1, a_idx=np.arange(inner), b_idx=head_anchor)
    ctx.link(ow, 0, out, -1)
    if ob is not None:
        ctx.link(ob, 0, out, -1)
    if p["in_proj_weight"] is not None:
        w = p["in_proj_weight"]
        rows = np.arange(3 * inner)
        ctx.link(w, 0, ow, 1, a_idx=rows, b_idx=head_anchor[rows % inner])
        for t in (query, key, value):
            if isinstance(t, Value):
                ctx.link(w, 1, t, -1)
    else:
        for name, t in (("q_proj_weight", query), ("k_proj_weight", key), ("v_proj_weight", value)):
            w = p[name]
            ctx.link(w, 0, ow, 1, a_idx=np.arange(inner), b_idx=head_anchor)
            if isinstance(t, Value):
                ctx.link(w, 1, t, -1)
    if p["in_proj_bias"] is not None:
        b = p["in_proj_bias"]
        rows = np.arange(3 * inner)
        ctx.link(b, 0, ow, 1, a_idx=rows, b_idx=head_anchor[rows % inner])
    for d_ in range(out.ndim - 1):
        ctx.link(query, d_, out, d_)
    for extra in node.outputs[1:]:
        ctx.freeze(extra, None, "attention weights output")
    for t in node.tensor_args():
        if t not in (query, key, value):
            ctx.freeze(t, None, "attention mask")
    for t in (key, value):
        if isinstance(t, Value) and t is not query:
            for d_ in range(t.ndim - 1):
                ctx.freeze(t, d_, "key/value sequence")


def sync_mha(mod: nn.MultiheadAttention) -> dict:
    """Sizes of a pruned nn.MultiheadAttention; swaps its class when heads were removed."""
    changes: dict = {}
    inner = mod.out_proj.weight.shape[1]
    embed = mod.out_proj.weight.shape[0]
    heads = inner // mod.head_dim
    for attr, val in (("num_heads", heads), ("embed_dim", embed)):
        if getattr(mod, attr) != val:
            setattr(mod, attr, val)
            changes[attr] = val
    if mod._qkv_same_embed_dim:
        for attr in ("kdim", "vdim"):
            if getattr(mod, attr) != embed:
                setattr(mod, attr, embed)
                changes[attr] = embed
    if inner != embed and not isinstance(mod, PrunableMultiheadAttention):
        mod.__class__ = PrunableMultiheadAttention
        changes["__class__"] = "deepshrink.graph.mha.PrunableMultiheadAttention"
    return changes
