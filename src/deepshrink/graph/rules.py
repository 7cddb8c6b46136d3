"""Built-in dependency rules for torch functions and Tensor methods.

Each rule states, for one op, which output dims are the same channels as which input/parameter
dims (see `deepshrink.graph.dependency`). An op without a rule freezes every tensor it touches and
is reported, so an unknown op can never cause a mis-pruned model.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .dependency import RuleContext, register_op
from .node import OpNode, Value

_ELEMENTWISE = """
add sub mul div true_divide floor_divide rsub remainder fmod pow float_power maximum minimum fmax fmin
atan2 hypot lerp addcmul addcdiv where masked_fill copy_ type_as
__add__ __radd__ __iadd__ __sub__ __rsub__ __isub__ __mul__ __rmul__ __imul__ __truediv__ __rtruediv__
__itruediv__ __floordiv__ __rfloordiv__ __pow__ __rpow__ __mod__ __and__ __or__ __xor__ __iand__ __ior__
__eq__ __ne__ __lt__ __le__ __gt__ __ge__ eq ne lt le gt ge logical_and logical_or logical_xor
bitwise_and bitwise_or
add_ sub_ mul_ div_ pow_ masked_fill_ clamp_ lerp_
relu relu_ relu6 gelu silu silu_ sigmoid sigmoid_ tanh tanh_ hardtanh hardtanh_ hardswish hardswish_
hardsigmoid hardsigmoid_ leaky_relu leaky_relu_ elu elu_ selu celu mish softplus softsign tanhshrink
logsigmoid glu_ threshold threshold_ rrelu
exp exp_ log log_ log2 log10 log1p expm1 sqrt rsqrt abs abs_ neg __neg__ negative sign sgn erf erfc erfinv
cos sin tan square reciprocal floor ceil round trunc frac clamp clamp_min clamp_max clip nan_to_num
logical_not __invert__ bitwise_not isnan isinf isfinite sinh cosh asin acos atan
dropout dropout_ dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout
contiguous clone detach detach_ float half double bfloat16 int long bool short to type cpu cuda
triu tril triu_ tril_ zeros_like ones_like empty_like full_like rand_like randn_like fill_ zero_
""".split()

_REDUCTIONS = """mean sum amax amin max min std var logsumexp prod all any argmax argmin nansum nanmean median
count_nonzero""".split()


def _dims_arg(d, ndim: int) -> list[int]:
    if d is None:
        return list(range(ndim))
    if isinstance(d, int):
        return [d % ndim]
    return [int(x) % ndim for x in d]


@register_op(*_ELEMENTWISE)
def _elementwise(ctx: RuleContext, node: OpNode) -> None:
    out = node.outputs[0]
    ctx.broadcast(out, node.tensor_args())


@register_op("expand", "expand_as", "broadcast_to")
def _expand(ctx: RuleContext, node: OpNode) -> None:
    out = node.outputs[0]
    ctx.broadcast(out, [node.args[0]])
    if node.target == "expand_as" and isinstance(node.arg(1, "other"), Value):
        ctx.identity(node.arg(1, "other"), out)


@register_op("repeat")
def _repeat(ctx: RuleContext, node: OpNode) -> None:
    x, out = node.args[0], node.outputs[0]
    shift = out.ndim - x.ndim
    for d in range(x.ndim):
        if x.shape[d] == out.shape[d + shift]:
            ctx.link(x, d, out, d + shift)


@register_op("softmax", "log_softmax", "_softmax", "cumsum", "cumprod", "normalize")
def _softmax(ctx: RuleContext, node: OpNode) -> None:
    x, out = node.args[0], node.outputs[0]
    ctx.identity(x, out)
    dim = node.arg(1, "dim", -1 if node.target != "normalize" else 1)
    if node.target == "normalize":
        dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 1)
    if isinstance(dim, int):
        ctx.inexact(x, dim)


@register_op(*_REDUCTIONS, "norm")
def _reduce(ctx: RuleContext, node: OpNode) -> None:
    x = node.args[0]
    others = [a for a in node.tensor_args()[1:]]
    if others:  # binary max/min(a, b)
        ctx.broadcast(node.outputs[0], node.tensor_args())
        return
    if node.target == "norm":
        dim, keep = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else None), node.kwargs.get(
            "keepdim", node.args[3] if len(node.args) > 3 else False)
    else:
        dim, keep = node.arg(1, "dim"), node.arg(2, "keepdim", False)
    if isinstance(dim, Value) or x.ndim == 0:
        ctx.freeze_all(node, "reduction with tensor dims")
        return
    reduced = _dims_arg(dim, x.ndim)
    for d in reduced:
        ctx.inexact(x, d)
    for out in node.outputs:
        j = 0
        for d in range(x.ndim):
            if d in reduced:
                j += 1 if keep else 0
                continue
            if j < out.ndim and out.shape[j] == x.shape[d]:
                ctx.link(x, d, out, j)
            j += 1


_POOL = re.compile(r"(adaptive_)?(avg|max|lp)_pool(\d)d(_with_indices)?|fractional_max_pool(\d)d")


@register_op("interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "grid_sample")
def _resample(ctx: RuleContext, node: OpNode) -> None:
    x = node.args[0]
    for out in node.outputs:
        for d in range(min(2, x.ndim)):
            if out.shape[d] == x.shape[d]:
                ctx.link(x, d, out, d)


def _pool(ctx: RuleContext, node: OpNode) -> None:
    m = _POOL.fullmatch(node.target)
    k = int(m.group(3) or m.group(5))
    x = node.args[0]
    for out in node.outputs:
        for d in range(x.ndim - k):
            if out.ndim > d and out.shape[d] == x.shape[d]:
                ctx.link(x, d, out, d)


for _d in (1, 2, 3):
    for _p in ("avg", "max", "lp"):
        register_op(f"{_p}_pool{_d}d", f"adaptive_{_p}_pool{_d}d", f"{_p}_pool{_d}d_with_indices",
                    f"adaptive_{_p}_pool{_d}d_with_indices")(_pool)


@register_op("pad")
def _pad(ctx: RuleContext, node: OpNode) -> None:
    x, out = node.args[0], node.outputs[0]
    pad = list(node.arg(1, "pad", ()))
    padded = {x.ndim - 1 - i // 2 for i, p in enumerate(pad) if p}
    for d in range(x.ndim):
        if d not in padded and x.shape[d] == out.shape[d]:
            ctx.link(x, d, out, d)


@register_op("pixel_shuffle", "pixel_unshuffle")
def _pixel_shuffle(ctx: RuleContext, node: OpNode) -> None:
    x, out = node.args[0], node.outputs[0]
    r2 = int(node.arg(1, "upscale_factor" if node.target == "pixel_shuffle" else "downscale_factor")) ** 2
    for d in range(x.ndim - 3):
        ctx.link(x, d, out, d)
    if node.target == "pixel_shuffle":
        ctx.link(x, -3, out, -3, a_idx=np.arange(x.shape[-3]), b_idx=np.arange(x.shape[-3]) // r2)
    else:
        ctx.link(out, -3, x, -3, a_idx=np.arange(out.shape[-3]), b_idx=np.arange(out.shape[-3]) // r2)


@register_op("roll", "flip", "fliplr", "flipud")
def _roll(ctx: RuleContext, node: OpNode) -> None:
    x, out = node.args[0], node.outputs[0]
    dims = node.arg(2 if node.target == "roll" else 1, "dims")
    if node.target == "fliplr":
        dims = 1
    if node.target == "flipud":
        dims = 0
    moved = set(_dims_arg(dims, x.ndim)) if dims is not None else set(range(x.ndim))
    for d in range(x.ndim):
        if d not in moved:
            ctx.link(x, d, out, d)


# -- layout ---------------------------------------------------------------------------------------


def reshape_links(ctx: RuleContext, x: Value, out: Value) -> None:
    """Link dims through a view/reshape by grouping dims whose sizes multiply to the same number.

    A merged dim is linked to its outermost factor by blocks (channel c of ``(C, H, W)`` is slots
    ``c*H*W ... (c+1)*H*W - 1`` of the flattened dim; head h of ``(H, D)`` is ``h*D ... h*D+D-1``);
    inner factors are frozen (their size is baked into the layout).
    """
    ins, outs = x.shape, out.shape
    i = j = 0
    while i < len(ins) and j < len(outs):
        if ins[i] == 1:
            i += 1
            continue
        if outs[j] == 1:
            j += 1
            continue
        gi, gj, pi, pj = [i], [j], ins[i], outs[j]
        while pi != pj:
            if pi < pj:
                i += 1
                if i >= len(ins):
                    break
                gi.append(i)
                pi *= ins[i]
            else:
                j += 1
                if j >= len(outs):
                    break
                gj.append(j)
                pj *= outs[j]
        if pi != pj:
            ctx.freeze(x, None, "irregular reshape")
            return
        i += 1
        j += 1
        ni = [d for d in gi if ins[d] > 1]
        nj = [d for d in gj if outs[d] > 1]
        if len(ni) == 1 and len(nj) == 1:
            ctx.link(x, ni[0], out, nj[0])
        elif len(ni) == 1:
            inner = math.prod(outs[d] for d in nj[1:])
            n = ins[ni[0]]
            ctx.link(x, ni[0], out, nj[0], a_idx=np.arange(n), b_idx=np.arange(n) // inner)
            for d in nj[1:]:
                ctx.freeze(out, d, "inner factor of a split reshape")
        elif len(nj) == 1:
            inner = math.prod(ins[d] for d in ni[1:])
            n = outs[nj[0]]
            ctx.link(out, nj[0], x, ni[0], a_idx=np.arange(n), b_idx=np.arange(n) // inner)
            for d in ni[1:]:
                ctx.freeze(x, d, "inner factor of a merged reshape")
        else:
            for d in ni:
                ctx.freeze(x, d, "many-to-many reshape")


@register_op("view", "reshape", "view_as", "reshape_as", "flatten", "unflatten", "squeeze", "unsqueeze",
             "squeeze_", "unsqueeze_", "ravel", "atleast_2d", "atleast_3d")
def _reshape(ctx: RuleContext, node: OpNode) -> None:
    x, out = node.args[0], node.outputs[0]
    if not isinstance(x, Value):
        ctx.freeze_all(node, "reshape of a non-tensor")
        return
    if node.target == "view" and len(node.args) > 1 and not isinstance(node.args[1], (int, tuple, list)):
        ctx.broadcast(out, [x])  # view(dtype)
        return
    reshape_links(ctx, x, out)


def _perm(node: OpNode, ndim: int) -> list[int] | None:
    t = node.target
    if t in ("permute",):
        dims = node.args[1:] if len(node.args) > 2 or isinstance(node.arg(1, "dims"), int) else node.arg(1, "dims")
        return [int(d) % ndim for d in dims]
    if t in ("transpose", "swapaxes", "swapdims", "transpose_"):
        a, b = int(node.arg(1, "dim0")) % ndim, int(node.arg(2, "dim1")) % ndim
        p = list(range(ndim))
        p[a], p[b] = p[b], p[a]
        return p
    if t in ("t", "T", "numpy_T"):
        return list(reversed(range(ndim)))
    if t in ("mT", "mH", "adjoint"):
        return list(range(ndim - 2)) + [ndim - 1, ndim - 2]
    if t == "movedim":
        src, dst = node.arg(1, "source"), node.arg(2, "destination")
        src = [src] if isinstance(src, int) else list(src)
        dst = [dst] if isinstance(dst, int) else list(dst)
        src = [s % ndim for s in src]
        dst = [d % ndim for d in dst]
        order = [d for d in range(ndim) if d not in src]
        p = [None] * ndim
        for s, d in zip(src, dst, strict=False):
            p[d] = s
        it = iter(order)
        return [v if v is not None else next(it) for v in p]
    return None


@register_op("permute", "transpose", "transpose_", "swapaxes", "swapdims", "t", "T", "mT", "mH", "adjoint",
             "movedim")
def _permute(ctx: RuleContext, node: OpNode) -> None:
    x, out = node.args[0], node.outputs[0]
    p = _perm(node, x.ndim)
    for j, d in enumerate(p):
        ctx.link(x, d, out, j)


@register_op("cat", "concat", "concatenate")
def _cat(ctx: RuleContext, node: OpNode) -> None:
    xs = [t for t in node.arg(0, "tensors") if isinstance(t, Value)]
    out = node.outputs[0]
    dim = int(node.arg(1, "dim", 0)) % out.ndim
    off = 0
    for x in xs:
        if x.ndim != out.ndim:
            continue
        for d in range(out.ndim):
            if d == dim:
                ctx.link(x, d, out, d, a_idx=np.arange(x.shape[d]), b_idx=off + np.arange(x.shape[d]))
            else:
                ctx.link(x, d, out, d)
        off += x.shape[dim]


@register_op("stack")
def _stack(ctx: RuleContext, node: OpNode) -> None:
    xs = [t for t in node.arg(0, "tensors") if isinstance(t, Value)]
    out = node.outputs[0]
    dim = int(node.arg(1, "dim", 0)) % out.ndim
    for x in xs:
        for d in range(x.ndim):
            ctx.link(x, d, out, d if d < dim else d + 1)


@register_op("split", "split_with_sizes", "chunk", "tensor_split", "unsafe_split", "unbind")
def _split(ctx: RuleContext, node: OpNode) -> None:
    x = node.args[0]
    if node.target == "unbind":
        dim = int(node.arg(1, "dim", 0)) % x.ndim
        ctx.freeze(x, dim, "unbind")
        for out in node.outputs:
            for d in range(x.ndim):
                if d != dim:
                    ctx.link(x, d, out, d if d < dim else d - 1)
        return
    dim = int(node.arg(2, "dim", 0)) % x.ndim
    size = node.arg(1, "split_size")
    equal = len({o.shape[dim] for o in node.outputs}) == 1
    if node.target in ("split", "unsafe_split") and isinstance(size, int) and equal:
        # split(n): the size is a constant of the code unless it is a head-width attribute we update
        if not _patchable(ctx, node.scope, size):
            ctx.freeze(x, dim, "split by a constant size")
    elif node.target != "chunk" or not equal:
        ctx.freeze(x, dim, f"{node.target} into fixed sizes")
    off = 0
    first = node.outputs[0]
    for out in node.outputs:
        for d in range(x.ndim):
            if d == dim:
                ctx.link(out, d, x, d, a_idx=np.arange(out.shape[d]), b_idx=off + np.arange(out.shape[d]))
                if equal and out is not first:  # equal pieces stay equal: prune the same positions
                    ctx.link(out, d, first, d)
            else:
                ctx.link(x, d, out, d)
        off += out.shape[dim]


def _patchable(ctx: RuleContext, scope: str, value: int) -> bool:
    from .mha import HEAD_ATTRS

    parts = scope.split(".") if scope else []
    for i in range(len(parts), -1, -1):
        try:
            mod = ctx.model.get_submodule(".".join(parts[:i]))
        except AttributeError:
            continue
        if any(getattr(mod, a, None) == value for a in HEAD_ATTRS):
            return True
    return False


@register_op("zeros", "ones", "full", "empty", "zeros_like_", "new_zeros", "new_ones", "new_full", "new_empty",
             "arange", "tensor", "as_tensor", "randn", "rand", "randint", "eye", "linspace", "ones_like_")
def _creation(ctx: RuleContext, node: OpNode) -> None:
    """Tensors created from sizes in the code: frozen, except an RNN's own initial state (its size
    comes from ``hidden_size``, which pruning updates)."""
    from torch import nn

    try:
        mod = ctx.model.get_submodule(node.scope) if node.scope else ctx.model
    except AttributeError:
        mod = None
    if isinstance(mod, nn.RNNBase) and node.target == "zeros":
        return
    for out in node.outputs:
        ctx.freeze(out, None, f"created by {node.target} with sizes fixed in the code")


@register_op("narrow", "select", "index_select", "gather", "take_along_dim", "diagonal")
def _narrow(ctx: RuleContext, node: OpNode) -> None:
    x, out = node.args[0], node.outputs[0]
    if node.target in ("gather", "take_along_dim", "diagonal"):
        ctx.freeze_all(node, f"{node.target} picks data-dependent/partial indices")
        return
    dim = int(node.arg(1, "dim")) % x.ndim
    ctx.freeze(x, dim, f"{node.target} of part of a dim")
    drop = node.target == "select"
    for d in range(x.ndim):
        if d == dim:
            continue
        ctx.link(x, d, out, d - 1 if drop and d > dim else d)


@register_op("__getitem__")
def _getitem(ctx: RuleContext, node: OpNode) -> None:
    x, idx, out = node.args[0], node.args[1], node.outputs[0]
    if not isinstance(x, Value):
        ctx.freeze_all(node, "indexing a non-tensor")
        return
    items = list(idx) if isinstance(idx, tuple) else [idx]
    tensor_items = [k for k, it in enumerate(items) if isinstance(it, Value)]
    if len(tensor_items) == 1 and items[tensor_items[0]].dtype not in ("bool", "uint8") and all(
        k in tensor_items or it is Ellipsis or (isinstance(it, slice) and it == slice(None)) for k, it in enumerate(items)
    ) and Ellipsis not in items:
        k = tensor_items[0]
        ix = items[k]
        ctx.freeze(x, k, "indexed by a tensor")
        for d in range(k):
            ctx.link(x, d, out, d)
        for d in range(ix.ndim):
            ctx.link(ix, d, out, k + d)
        for d in range(k + 1, x.ndim):
            ctx.link(x, d, out, d - 1 + ix.ndim)
        return
    if any(isinstance(it, (Value, list)) or (not isinstance(it, (int, slice, type(None), type(Ellipsis))))
           for it in items):
        ctx.freeze_all(node, "advanced (tensor/list) indexing")
        return
    n_real = sum(1 for it in items if it is not None and it is not Ellipsis)
    d_in = d_out = 0
    for it in items:
        if it is None:
            d_out += 1
        elif it is Ellipsis:
            for _ in range(x.ndim - n_real):
                ctx.link(x, d_in, out, d_out)
                d_in += 1
                d_out += 1
        elif isinstance(it, int):
            ctx.freeze(x, d_in, "integer index")
            d_in += 1
        else:
            size = x.shape[d_in]
            start, stop, step = it.indices(size)
            if (start, stop, step) == (0, size, 1):
                ctx.link(x, d_in, out, d_out)
            else:
                ctx.freeze(x, d_in, "partial slice")
            d_in += 1
            d_out += 1
    while d_in < x.ndim:
        ctx.link(x, d_in, out, d_out)
        d_in += 1
        d_out += 1


@register_op("__setitem__", "index_put_", "masked_scatter_", "index_copy_", "scatter_", "index_add_")
def _mutate(ctx: RuleContext, node: OpNode) -> None:
    ctx.freeze_all(node, f"in-place partial write ({node.target})")


# -- layers as functions --------------------------------------------------------------------------


@register_op("linear")
def _linear(ctx: RuleContext, node: OpNode) -> None:
    x, w, b = node.arg(0, "input"), node.arg(1, "weight"), node.arg(2, "bias")
    out = node.outputs[0]
    ctx.link(x, -1, w, 1)
    ctx.link(out, -1, w, 0)
    if isinstance(b, Value):
        ctx.link(b, 0, out, -1)
    for d in range(x.ndim - 1):
        ctx.link(x, d, out, d)


@register_op("matmul", "__matmul__", "__rmatmul__", "bmm", "mm", "addmm", "baddbmm", "addbmm")
def _matmul(ctx: RuleContext, node: OpNode) -> None:
    out = node.outputs[0]
    if node.target in ("addmm", "baddbmm", "addbmm"):
        c, a, b = node.args[0], node.arg(1, "mat1"), node.arg(2, "mat2")
    else:
        a, b, c = node.args[0], node.args[1], None
        if node.target == "__rmatmul__":
            a, b = b, a
    if not (isinstance(a, Value) and isinstance(b, Value)) or a.ndim < 2 or b.ndim < 2:
        ctx.freeze_all(node, "matmul with a vector")
        return
    ctx.link(a, -1, b, -2)
    if a.kind != "state" and b.kind != "state":
        ctx.inexact(a, -1)
    ctx.link(a, -2, out, -2)
    ctx.link(b, -1, out, -1)
    for t in (a, b):
        shift = out.ndim - t.ndim
        for d in range(t.ndim - 2):
            if t.shape[d] == out.shape[d + shift]:
                ctx.link(t, d, out, d + shift)
    if isinstance(c, Value):
        ctx.broadcast(out, [c])


@register_op("einsum")
def _einsum(ctx: RuleContext, node: OpNode) -> None:
    eq = node.args[0]
    ops = node.args[1:]
    if len(ops) == 1 and isinstance(ops[0], (tuple, list)):
        ops = ops[0]
    if not isinstance(eq, str) or "..." in eq or "->" not in eq:
        ctx.freeze_all(node, "einsum with ellipsis/implicit output")
        return
    lhs, rhs = eq.replace(" ", "").split("->")
    terms = lhs.split(",")
    out = node.outputs[0]
    first: dict[str, tuple[Value, int]] = {}
    for t, term in zip(ops, terms, strict=False):
        for d, ch in enumerate(term):
            if ch in first:
                v, dv = first[ch]
                if v.shape[dv] == t.shape[d]:
                    ctx.link(v, dv, t, d)
            else:
                first[ch] = (t, d)
            if ch not in rhs and all(o.kind != "state" for o in ops):
                ctx.inexact(t, d)
    for d, ch in enumerate(rhs):
        if ch in first and first[ch][0].shape[first[ch][1]] == out.shape[d]:
            ctx.link(first[ch][0], first[ch][1], out, d)


@register_op("scaled_dot_product_attention")
def _sdpa(ctx: RuleContext, node: OpNode) -> None:
    q, k, v = node.arg(0, "query"), node.arg(1, "key"), node.arg(2, "value")
    mask = node.arg(3, "attn_mask")
    out = node.outputs[0]
    if node.kwargs.get("enable_gqa") and q.shape[:-2] != k.shape[:-2]:
        ctx.freeze_all(node, "grouped-query attention")
        return
    for t in (q, k, v):
        shift = out.ndim - t.ndim
        for d in range(t.ndim - 2):
            if t.shape[d] == out.shape[d + shift]:
                ctx.link(t, d, out, d + shift)
    ctx.link(q, -2, out, -2)
    ctx.link(k, -2, v, -2)
    ctx.link(q, -1, k, -1)
    ctx.inexact(q, -1)
    ctx.link(v, -1, out, -1)
    if isinstance(mask, Value):
        ref = list(out.shape[:-2]) + [q.shape[-2], k.shape[-2]]
        shift = len(ref) - mask.ndim
        for d in range(mask.ndim):
            rd = d + shift
            if rd < 0 or mask.shape[d] != ref[rd]:
                continue
            if rd == len(ref) - 1:
                ctx.link(mask, d, k, -2)
            elif rd == len(ref) - 2:
                ctx.link(mask, d, q, -2)
            else:
                ctx.link(mask, d, out, rd)


def _conv_k(name: str) -> int:
    return int(name[-2])


@register_op("conv1d", "conv2d", "conv3d")
def _conv(ctx: RuleContext, node: OpNode) -> None:
    x, w, b = node.arg(0, "input"), node.arg(1, "weight"), node.arg(2, "bias")
    groups = int(node.arg(6, "groups", 1))
    out = node.outputs[0]
    k = _conv_k(node.target)
    cd = x.ndim - k - 1  # channel dim (1 batched, 0 unbatched)
    for d in range(cd):
        ctx.link(x, d, out, d)
    cin, cout = x.shape[cd], out.shape[cd]
    ctx.link(out, cd, w, 0)
    if isinstance(b, Value):
        ctx.link(b, 0, out, cd)
    if groups == 1:
        ctx.link(x, cd, w, 1)
    elif groups == cin:  # depthwise (channel multiplier m = cout / cin)
        m = cout // cin
        ctx.link(out, cd, x, cd, a_idx=np.arange(cout), b_idx=np.arange(cout) // m)
    else:  # grouped: a whole group (its inputs and outputs) is one pruning unit
        gin, gout = cin // groups, cout // groups
        ctx.link(x, cd, x, cd, a_idx=np.arange(cin), b_idx=(np.arange(cin) // gin) * gin)
        ctx.link(out, cd, x, cd, a_idx=np.arange(cout), b_idx=(np.arange(cout) // gout) * gin)


@register_op("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def _conv_t(ctx: RuleContext, node: OpNode) -> None:
    x, w, b = node.arg(0, "input"), node.arg(1, "weight"), node.arg(2, "bias")
    groups = int(node.arg(6, "groups", 1))
    out = node.outputs[0]
    if groups != 1:
        ctx.freeze_all(node, "grouped transposed convolution")
        return
    cd = x.ndim - _conv_k(node.target) - 1
    for d in range(cd):
        ctx.link(x, d, out, d)
    ctx.link(x, cd, w, 0)
    ctx.link(out, cd, w, 1)
    if isinstance(b, Value):
        ctx.link(b, 0, out, cd)


@register_op("batch_norm", "instance_norm")
def _batch_norm(ctx: RuleContext, node: OpNode) -> None:
    x, out = node.args[0], node.outputs[0]
    ctx.identity(x, out)
    cd = 1 if x.ndim > 1 else 0
    names = ("running_mean", "running_var", "weight", "bias")
    for i, n in enumerate(names):
        p = node.arg(1 + i, n)
        if isinstance(p, Value):
            ctx.link(p, 0, x, cd)
    if node.target == "instance_norm":
        for d in range(2, x.ndim):
            ctx.inexact(x, d)


@register_op("layer_norm", "rms_norm")
def _layer_norm(ctx: RuleContext, node: OpNode) -> None:
    x, out = node.args[0], node.outputs[0]
    ctx.identity(x, out)
    shape = node.arg(1, "normalized_shape")
    k = len(shape) if isinstance(shape, (tuple, list)) else 1
    for i in range(k):
        ctx.inexact(x, x.ndim - k + i)
    for name, pos in (("weight", 2), ("bias", 3)):
        p = node.arg(pos, name)
        if isinstance(p, Value):
            for i in range(p.ndim):
                ctx.link(p, i, x, x.ndim - p.ndim + i)


@register_op("group_norm")
def _group_norm(ctx: RuleContext, node: OpNode) -> None:
    x, out = node.args[0], node.outputs[0]
    g = int(node.arg(1, "num_groups"))
    ctx.identity(x, out)
    c = x.shape[1]
    if g < c:
        w = c // g
        if g > 1:
            ctx.link(x, 1, x, 1, a_idx=np.arange(c), b_idx=(np.arange(c) // w) * w)
        ctx.inexact(x, 1)
    for name, pos in (("weight", 2), ("bias", 3)):
        p = node.arg(pos, name)
        if isinstance(p, Value):
            ctx.link(p, 0, x, 1)


@register_op("embedding")
def _embedding(ctx: RuleContext, node: OpNode) -> None:
    idx, w, out = node.arg(0, "input"), node.arg(1, "weight"), node.outputs[0]
    for d in range(idx.ndim):
        ctx.link(idx, d, out, d)
    ctx.link(out, -1, w, 1)
    ctx.freeze(w, 0, "embedding rows (vocabulary)")


@register_op("prelu")
def _prelu(ctx: RuleContext, node: OpNode) -> None:
    x, w, out = node.args[0], node.args[1], node.outputs[0]
    ctx.identity(x, out)
    if w.shape[0] > 1:
        ctx.link(w, 0, x, 1)
