"""Mask computation: which weights to prune, per granularity and scope.

Granularities (Mao et al., "Exploring the granularity of sparsity"; ESE; NVIDIA 2:4):

- ``"weight"``: single weights.
- ``"vector"``: rows — a row of a 2-D weight (a neuron's fan-in for Linear, a token for
  Embedding, a gate row for LSTM/GRU); for convolutions a row of each k×k kernel.
- ``"kernel"``: whole k×k kernels of a convolution (2-D weights fall back to single weights).
- ``"N:M"`` (e.g. ``"2:4"``): in every group of M consecutive input weights (input channels for
  convolutions) keep the N largest; the layer's sparsity is 1 - N/M whatever `sparsity` says.
- ``"balanced"`` / ``"balanced:B"``: the weight matrix is dealt row by row (round robin, as ESE
  assigns rows to processing elements) into B sub-matrices (default 4), each pruned to the same
  sparsity, so each holds the same number of non-zeros.

Scopes: ``"layer"`` prunes every tensor to `sparsity`; ``"global"`` (class-blind, See et al.)
ranks the scores of all pooled tensors together, which fixes how much each tensor loses; the
tensor's granularity is then applied at that sparsity.

Example:
    >>> import torch
    >>> from deepshrink.prune.unstructured.masks import compute_mask, parse_granularity
    >>> w = torch.tensor([[1.0, -3.0, 0.5, 2.0]])
    >>> compute_mask(w.abs(), 0.5, parse_granularity("2:4"), is_conv=False).tolist()
    [[False, True, False, True]]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import InputError
from ...selectors import override_for, select

log = logging.getLogger(__name__)

PRUNABLE_TYPES = (
    nn.Linear,
    nn.Bilinear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.Embedding,
    nn.EmbeddingBag,
    nn.RNNBase,
)


@dataclass(frozen=True)
class Granularity:
    kind: str  # "weight" | "vector" | "kernel" | "nm" | "balanced"
    n: int = 0
    m: int = 0

    def __str__(self) -> str:
        if self.kind == "nm":
            return f"{self.n}:{self.m}"
        if self.kind == "balanced":
            return f"balanced:{self.n}"
        return self.kind


def parse_granularity(spec: str | Granularity) -> Granularity:
    """Parse ``"weight"``, ``"vector"``, ``"kernel"``, ``"N:M"`` or ``"balanced[:B]"``."""
    if isinstance(spec, Granularity):
        return spec
    if not isinstance(spec, str):
        raise InputError(f"granularity must be a string, got {spec!r}")
    s = spec.strip().lower()
    if s in ("weight", "vector", "kernel"):
        return Granularity(s)
    if s.startswith("balanced"):
        _, _, banks = s.partition(":")
        try:
            b = int(banks) if banks else 4
        except ValueError:
            raise InputError(f"bad granularity {spec!r}: use 'balanced:B' with an integer B") from None
        if b < 1:
            raise InputError(f"bad granularity {spec!r}: B must be >= 1")
        return Granularity("balanced", b)
    if ":" in s:
        a, _, b = s.partition(":")
        try:
            n, m = int(a), int(b)
        except ValueError:
            raise InputError(f"bad granularity {spec!r}: N:M needs integers, e.g. '2:4'") from None
        if not 0 < n < m:
            raise InputError(f"bad granularity {spec!r}: need 0 < N < M")
        return Granularity("nm", n, m)
    raise InputError(f"unknown granularity {spec!r}; use weight, vector, kernel, N:M (e.g. 2:4) or balanced[:B]")


def check_sparsity(sparsity: float, what: str = "sparsity") -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise InputError(f"{what} must be a number in [0, 1), got {sparsity!r}")
    if not 0.0 <= float(sparsity) < 1.0:
        raise InputError(f"{what} must be in [0, 1), got {sparsity}")
    return float(sparsity)


def is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd)


def weight_names(module: nn.Module) -> list[str]:
    """The prunable weight parameters of a supported module (biases are never pruned here)."""
    if isinstance(module, nn.RNNBase):
        return [n for n, _ in module.named_parameters(recurse=False) if n.startswith("weight_")]
    if isinstance(module, PRUNABLE_TYPES) and isinstance(getattr(module, "weight", None), nn.Parameter):
        return ["weight"]
    return []


@dataclass
class Target:
    """One prunable tensor: ``model.<module_name>.<param>``."""

    module_name: str
    module: nn.Module
    param: str
    sparsity: float
    granularity: Granularity
    pooled: bool  # ranked globally (False when a per-layer override applies or scope="layer")

    @property
    def name(self) -> str:
        return f"{self.module_name}.{self.param}" if self.module_name else self.param

    @property
    def tensor(self) -> torch.Tensor:
        return getattr(self.module, self.param)


def targets(
    model: nn.Module,
    sparsity: float,
    *,
    scope: str = "global",
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    overrides: dict | Sequence | None = None,
    granularity: str = "weight",
) -> list[Target]:
    """The tensors to prune with their sparsity/granularity; raises `InputError` when none."""
    check_sparsity(sparsity)
    if scope not in ("global", "layer"):
        raise InputError(f"scope must be 'global' or 'layer', got {scope!r}")
    gran = parse_granularity(granularity)
    modules = dict(model.named_modules())
    candidates = [n for n, m in modules.items() if weight_names(m)]
    names = select(model, include=include, exclude=exclude, candidates=candidates)
    if not names:
        raise InputError(
            f"{type(model).__name__} has no prunable layers (Linear, Conv, Embedding, RNN/LSTM/GRU) "
            "left after include/exclude"
        )
    out = []
    seen: dict[int, str] = {}  # tied weights (e.g. shared embedding/output) are pruned once
    for n in names:
        m = modules[n]
        ov = override_for(n, m, overrides, None)
        s, g = sparsity, gran
        if isinstance(ov, dict):
            unknown = set(ov) - {"sparsity", "granularity"}
            if unknown:
                raise InputError(f"override for {n!r} has unknown keys {sorted(unknown)}")
            s = check_sparsity(ov.get("sparsity", sparsity), f"override sparsity of {n!r}")
            g = parse_granularity(ov.get("granularity", granularity))
        elif ov is not None:
            s = check_sparsity(ov, f"override sparsity of {n!r}")
        for p in weight_names(m):
            key = id(getattr(m, p))
            if key in seen:
                log.info("%s.%s is the same tensor as %s; pruned once", n, p, seen[key])
                continue
            seen[key] = f"{n}.{p}"
            out.append(Target(n, m, p, s, g, pooled=(scope == "global" and ov is None)))
    return out


def _topk_false(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """A keep-mask over the groups of `scores` (1-D) pruning the `n_prune` smallest."""
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    if n_prune > 0:
        idx = torch.topk(scores, n_prune, largest=False, sorted=False).indices
        keep[idx] = False
    return keep


def compute_mask(scores: torch.Tensor, sparsity: float, gran: Granularity, *, is_conv: bool) -> torch.Tensor:
    """A bool keep-mask shaped like `scores` (importance per weight, >= 0; < 0 = already pruned).

    Raises `InputError` when the granularity does not fit the tensor (e.g. N:M with a width not
    divisible by M)."""
    shape = scores.shape
    s = scores.detach().float()
    if gran.kind == "weight" or (gran.kind == "kernel" and not is_conv) or s.dim() < 2:
        flat = s.reshape(-1)
        return _topk_false(flat, int(round(sparsity * flat.numel()))).view(shape)
    if gran.kind in ("vector", "kernel"):
        group = shape[-1] if (gran.kind == "vector" and is_conv and s.dim() > 2) else None
        if gran.kind == "kernel":
            g = s.reshape(shape[0] * shape[1], -1)
        elif group is not None:
            g = s.reshape(-1, group)
        else:
            g = s.reshape(shape[0], -1)
        gs = g.clamp_min(0).sum(1) - (g < 0).all(1).float()  # fully pruned groups rank first
        keep = _topk_false(gs, int(round(sparsity * gs.numel())))
        return keep[:, None].expand_as(g).reshape(shape).clone()
    if gran.kind == "nm":
        n, m = gran.n, gran.m
        t = s.movedim(1, -1) if (is_conv and s.dim() > 2) else s
        if t.shape[-1] % m:
            raise InputError(f"N:M {n}:{m} needs the input width ({t.shape[-1]}) divisible by {m}")
        g = t.reshape(-1, m)
        idx = torch.topk(g, n, dim=1).indices
        keep = torch.zeros_like(g, dtype=torch.bool).scatter_(1, idx, True).reshape(t.shape)
        return (keep.movedim(-1, 1) if (is_conv and s.dim() > 2) else keep).contiguous()
    if gran.kind == "balanced":
        mat = s.reshape(shape[0], -1)
        keep = torch.ones_like(mat, dtype=torch.bool)
        for b in range(min(gran.n, shape[0])):
            bank = mat[b :: gran.n]
            keep[b :: gran.n] = _topk_false(bank.reshape(-1), int(round(sparsity * bank.numel()))).view_as(bank)
        return keep.view(shape)
    raise InputError(f"unsupported granularity {gran}")


def global_sparsities(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, float]:
    """Per-tensor sparsity from ranking all `scores` together (class-blind pruning)."""
    if not scores:
        return {}
    flat = torch.cat([s.detach().reshape(-1).float() for s in scores.values()])
    n_prune = int(round(sparsity * flat.numel()))
    if n_prune == 0:
        return {k: 0.0 for k in scores}
    thr = torch.kthvalue(flat, n_prune).values
    counts = {k: int((s.detach().float() < thr).sum()) for k, s in scores.items()}
    ties = {k: int((s.detach().float() == thr).sum()) for k, s in scores.items()}
    left = n_prune - sum(counts.values())
    for k in scores:  # hand out the tied weights in order until the total is exact
        take = min(ties[k], max(left, 0))
        counts[k] += take
        left -= take
    return {k: counts[k] / max(scores[k].numel(), 1) for k in scores}


ScoreFn = Callable[[Target], torch.Tensor]


def plan_masks(tgts: list[Target], sparsity: float, score_fn: ScoreFn) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Compute masks for `tgts`. Returns (report rows, ``{target name: keep-mask}``).

    Weights already held at zero by an existing mask rank below everything, so raising the
    sparsity never revives them."""
    from .constraints import buffer_name, constraints_of

    scores: dict[str, torch.Tensor] = {}
    for t in tgts:
        sc = score_fn(t).detach().float().abs()
        if constraints_of(t.module).get(t.param) == "mask":
            sc = sc.masked_fill(~getattr(t.module, buffer_name(t.param, "mask")), -1.0)
        scores[t.name] = sc
    pooled = {t.name: scores[t.name] for t in tgts if t.pooled}
    per = global_sparsities(pooled, sparsity)
    rows, masks = [], {}
    for t in tgts:
        s = per.get(t.name, t.sparsity)
        if t.granularity.kind == "nm":  # the pattern fixes the sparsity
            s = 1.0 - t.granularity.n / t.granularity.m
        row = {"layer": t.name, "granularity": str(t.granularity), "numel": t.tensor.numel(), "target": round(s, 6)}
        n_prune = s * t.tensor.numel()
        if t.granularity.kind != "nm" and n_prune < 1:
            row["skipped"] = "nothing to prune at this sparsity" if s > 0 else "sparsity 0"
            rows.append(row)
            continue
        try:
            mask = compute_mask(scores[t.name], s, t.granularity, is_conv=is_conv(t.module))
        except InputError as exc:
            row["skipped"] = str(exc)
            rows.append(row)
            continue
        masks[t.name] = mask
        row["sparsity"] = round(1.0 - float(mask.float().mean()), 6)
        rows.append(row)
    return rows, masks
