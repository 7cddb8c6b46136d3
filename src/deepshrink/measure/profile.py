"""Per-layer and total parameters, MACs and bytes of a model.

MACs come from `torch.utils.flop_counter` (FLOPs / 2), attributed to the leaf modules that run the
counted ops; nothing is hand-counted except quantized/packed layers the counter cannot see (their
MACs are derived from weight and output shapes). The share of MACs and parameters per layer kind
(conv, linear, ...) reproduces the split that compression surveys tabulate for AlexNet/VGG.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.measure import profile
    >>> p = profile(nn.Linear(10, 5), torch.zeros(1, 10))
    >>> p.params, p.macs, p.size_bytes
    (55, 50, 220)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..inputs import as_inputs, first_tensor, run_forward

_KINDS = (
    ("conv", (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)),
    ("linear", (nn.Linear, nn.Bilinear)),
    ("embedding", (nn.Embedding, nn.EmbeddingBag)),
    ("recurrent", (nn.RNNBase,)),
    ("attention", (nn.MultiheadAttention,)),
    (
        "norm",
        (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm),
    ),
)


def layer_kind(module: nn.Module) -> str:
    """A coarse kind for `module`: conv, linear, embedding, recurrent, attention, norm or other."""
    for kind, types in _KINDS:
        if isinstance(module, types):
            return kind
    name = type(module).__name__.lower()
    for kind in ("conv", "linear", "embedding", "lstm", "gru", "attention"):
        if kind in name:
            return {"lstm": "recurrent", "gru": "recurrent"}.get(kind, kind)
    return "other"


@dataclass
class LayerRow:
    name: str
    type: str
    kind: str
    params: int
    macs: int
    size_bytes: int
    output_shape: list[int] | None = None


@dataclass
class Profile:
    """Totals and per-layer rows. `size_bytes` is the fp32 state_dict size (floats counted at 4 bytes)."""

    params: int
    macs: int
    size_bytes: int
    layers: list[LayerRow] = field(default_factory=list)
    input_shapes: list[list[int]] = field(default_factory=list)

    def by_kind(self) -> dict[str, dict[str, float]]:
        """Share of parameters and MACs per layer kind: ``{kind: {params, macs, params_share, macs_share}}``."""
        out: dict[str, dict[str, float]] = {}
        for r in self.layers:
            d = out.setdefault(r.kind, {"params": 0, "macs": 0})
            d["params"] += r.params
            d["macs"] += r.macs
        for d in out.values():
            d["params_share"] = d["params"] / self.params if self.params else 0.0
            d["macs_share"] = d["macs"] / self.macs if self.macs else 0.0
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["by_kind"] = self.by_kind()
        return d


def _packed_weight_numel(module: nn.Module) -> int:
    """Elements of quantized/packed weights (torch.ao quantized modules keep them out of parameters())."""
    n = 0
    w = getattr(module, "weight", None)
    if callable(w) and not isinstance(w, nn.Parameter):
        try:
            t = w()
            n += t.numel()
        except Exception:  # noqa: BLE001 - not a packed-weight module
            return 0
        b = getattr(module, "bias", None)
        b = b() if callable(b) else b
        if isinstance(b, torch.Tensor):
            n += b.numel()
    return n


def count_params(module: nn.Module, *, recurse: bool = True) -> int:
    """Parameters of `module`, including quantized/packed weights the module keeps outside parameters()."""
    mods = module.modules() if recurse else [module]
    total = 0
    for m in mods:
        total += sum(p.numel() for p in m.parameters(recurse=False))
        total += _packed_weight_numel(m)
    return total


def _tensor_fp32_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * (4 if value.is_floating_point() or value.is_quantized else value.element_size())
    if isinstance(value, (tuple, list)):  # torch.ao packs (weight, bias) tuples into the state_dict
        return sum(_tensor_fp32_bytes(v) for v in value)
    return 0


def fp32_bytes(model: nn.Module) -> int:
    """Bytes of the model's state_dict with floating (and quantized) tensors counted at 4 bytes each."""
    return sum(_tensor_fp32_bytes(v) for v in model.state_dict().values())


def _packed_macs(module: nn.Module, out: torch.Tensor) -> int:
    """MACs of a quantized Linear/Conv from its weight and output shapes (the flop counter misses them)."""
    try:
        w = module.weight()
    except Exception:  # noqa: BLE001
        return 0
    if w.dim() == 2:  # linear: out elements x in_features
        return out.numel() * w.shape[1]
    if w.dim() >= 3:  # conv: out elements x (in/groups x kernel)
        return out.numel() * int(torch.tensor(w.shape[1:]).prod())
    return 0


def _extra_flop_formulas() -> dict:
    """Flop formulas torch's counter lacks: the CPU fused attention kernel (used by
    `F.scaled_dot_product_attention`, hence by Hugging Face BERT/ViT/GPT-2 on CPU)."""
    from torch.utils.flop_counter import sdpa_flop_count

    def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    ops = [getattr(torch.ops.aten, n, None) for n in ("_scaled_dot_product_flash_attention_for_cpu",)]
    return {op: cpu_sdpa for op in ops if op is not None}


def profile(model: nn.Module, example_inputs: Any) -> Profile:
    """Parameters, MACs and fp32 bytes of `model`, per leaf layer and in total.

    Args:
        model: any nn.Module; it is run once on `example_inputs` under no_grad.
        example_inputs: a tensor or tuple of tensors.

    Returns:
        A `Profile`; `profile(...).by_kind()` gives the conv/linear/... split.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> p = profile(nn.Conv2d(3, 8, 3), torch.zeros(1, 3, 10, 10))
        >>> p.macs == 8 * 8 * 8 * 3 * 3 * 3
        True
    """
    inputs = as_inputs(example_inputs)
    names = {m: n for n, m in model.named_modules()}
    leaves = [m for m in model.modules() if not list(m.children()) or isinstance(m, (nn.RNNBase, nn.MultiheadAttention))]
    outputs: dict[nn.Module, torch.Tensor] = {}
    handles = []
    for m in leaves:
        def hook(mod, _inp, out, _store=outputs):
            try:
                _store[mod] = first_tensor(out)
            except Exception:  # noqa: BLE001 - outputs without tensors are simply not recorded
                pass

        handles.append(m.register_forward_hook(hook))
    counter = FlopCounterMode(display=False, depth=None, custom_mapping=_extra_flop_formulas())
    was_training = model.training
    model.eval()  # a train-mode pass would update BatchNorm running statistics
    # nn.MultiheadAttention / TransformerEncoderLayer take a fused "fast path" in eval mode whose
    # kernel the flop counter does not know (it would count 0 MACs): count the math path instead.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with counter:
            run_forward(model, inputs, what="profiled model")
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
        for h in handles:
            h.remove()
    flops_by_module = counter.get_flop_counts()
    rows = []
    seen_macs = 0
    root = type(model).__name__
    for m in leaves:
        name = names.get(m, "")
        params = count_params(m)
        key = f"{root}.{name}" if name else root  # the counter prefixes names with the root's class
        macs = sum(flops_by_module.get(key, {}).values()) // 2
        if macs == 0 and m in outputs and _packed_weight_numel(m):
            macs = _packed_macs(m, outputs[m])
        seen_macs += macs
        if params == 0 and macs == 0:
            continue
        out = outputs.get(m)
        rows.append(
            LayerRow(
                name=name,
                type=type(m).__name__,
                kind=layer_kind(m),
                params=params,
                macs=int(macs),
                size_bytes=fp32_bytes(m),
                output_shape=list(out.shape) if isinstance(out, torch.Tensor) else None,
            )
        )
    total_macs = sum(flops_by_module.get("Global", {}).values()) // 2
    total_macs = max(int(total_macs), int(seen_macs))
    return Profile(
        params=count_params(model),
        macs=total_macs,
        size_bytes=fp32_bytes(model),
        layers=rows,
        input_shapes=[list(t.shape) for t in inputs if isinstance(t, torch.Tensor)],
    )
