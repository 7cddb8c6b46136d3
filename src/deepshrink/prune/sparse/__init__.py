"""Sparse execution: run highly sparse Linear / 1×1 Conv layers through torch's CSR/BSR kernels,
only where that is measured faster than dense on this CPU.

`sparsify` times each candidate layer on its real input at the given batch size (interleaved with
the dense layer, `deepshrink.measure.compare_latency`), swaps in the fastest format when it beats
dense by `min_speedup`, keeps it dense otherwise, and returns the decision table. `crossover`
measures the sparsity at which CSR starts to beat dense for one layer shape.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.prune import magnitude, finalize
    >>> from deepshrink.prune.sparse import sparsify
    >>> m = finalize(magnitude(nn.Sequential(nn.Linear(512, 512)), 0.98))
    >>> fast, table = sparsify(m, torch.randn(1, 512), repeats=20)
    >>> table[0]["layer"], table[0]["chosen"] in ("dense", "csr", "bsr")
    ('0', True)
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ...errors import InputError, VerificationError
from ...inputs import as_inputs, first_tensor, rebatch, run_forward
from ...selectors import select
from .modules import FORMATS, SparseConv1x1, SparseLinear, to_sparse

log = logging.getLogger(__name__)

__all__ = ["FORMATS", "SparseConv1x1", "SparseLinear", "crossover", "sparsify", "to_sparse"]


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _build(module: nn.Module, fmt: str, blocksize: tuple[int, int]) -> nn.Module:
    if isinstance(module, nn.Linear):
        return SparseLinear.from_dense(module, fmt, blocksize)
    return SparseConv1x1.from_dense(module, fmt, blocksize)


def sparsify(
    model: nn.Module,
    example_inputs: Any,
    *,
    batch_size: int | None = None,
    threads: int | None = None,
    formats: Sequence[str] = FORMATS,
    blocksize: tuple[int, int] = (4, 4),
    min_sparsity: float = 0.5,
    min_speedup: float = 1.05,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    repeats: int = 100,
    verify: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> tuple[nn.Module, list[dict]]:
    """A copy of `model` with sparse Linear / 1×1 Conv2d layers run by CSR/BSR kernels where faster.

    Args:
        model: the (pruned, finalized) model; left untouched.
        example_inputs: inputs the model runs on; each layer is timed on its own real input.
        batch_size: resize the inputs' dim 0 to this for the timing (default: as given). The
            converted model still accepts any batch size.
        threads: torch threads for the timing (default: available cores, at most 4).
        formats: sparse formats to try (``"csr"``, ``"bsr"``).
        blocksize: BSR block shape.
        min_sparsity: layers with fewer zeros stay dense without timing.
        min_speedup: the fastest sparse format must beat dense by this factor to be chosen.
        include, exclude: layer selectors.
        repeats: interleaved timing rounds per format.
        verify: check that the converted model's outputs match the original (raises
            `VerificationError` otherwise).
        rtol, atol: tolerances for the per-layer and whole-model checks (relative to the output scale).

    Returns:
        ``(model, table)``; one table row per candidate layer: ``layer``, ``shape``, ``sparsity``,
        ``dense_ms``, ``<format>_ms``, ``chosen`` and ``reason``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m, t = sparsify(nn.Sequential(nn.Linear(4, 4)), torch.randn(1, 4), repeats=5)
        >>> t[0]["chosen"], t[0]["reason"].startswith("sparsity")
        ('dense', True)
    """
    from ...measure import compare_latency

    for f in formats:
        if f not in FORMATS:
            raise InputError(f"unknown sparse format {f!r}; use one of {FORMATS}")
    inputs = as_inputs(example_inputs)
    if batch_size is not None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        inputs = rebatch(inputs, batch_size)
    out = copy.deepcopy(model).eval()
    modules = dict(out.named_modules())
    cands = [n for n, m in modules.items() if isinstance(m, nn.Linear) or SparseConv1x1.supports(m)]
    names = select(out, include=include, exclude=exclude, candidates=cands)
    captured: dict[str, torch.Tensor] = {}
    handles = [
        modules[n].register_forward_pre_hook(lambda mod, args, n=n: captured.setdefault(n, args[0].detach()))
        for n in names
    ]
    try:
        reference = first_tensor(run_forward(out, inputs))
    finally:
        for h in handles:
            h.remove()
    table = []
    for n in names:
        m = modules[n]
        w = m.weight.detach()
        sp = float((w == 0).float().mean())
        row: dict[str, Any] = {"layer": n, "kind": type(m).__name__, "shape": list(w.shape), "sparsity": round(sp, 4)}
        table.append(row)
        if n not in captured:
            row.update(chosen="dense", reason="not called by the example inputs")
            continue
        if sp < min_sparsity:
            row.update(chosen="dense", reason=f"sparsity {sp:.3f} < min_sparsity {min_sparsity}")
            continue
        x = captured[n]
        row["batch_rows"] = int(x.reshape(-1, x.shape[-1]).shape[0]) if isinstance(m, nn.Linear) else int(x.shape[0])
        with torch.no_grad():
            ref = m(x)
        best, best_speed = "dense", 0.0
        for fmt in formats:
            try:
                cand = _build(m, fmt, blocksize).eval()
            except InputError as exc:
                row[f"{fmt}_error"] = str(exc)
                continue
            with torch.no_grad():
                got = cand(x)
            scale = float(ref.abs().max()) or 1.0
            if not torch.allclose(got, ref, rtol=rtol, atol=atol * scale):
                row[f"{fmt}_error"] = f"outputs differ (max abs {float((got - ref).abs().max()):.3g})"
                continue
            cmp = compare_latency(m, cand, (x,), threads=threads, repeats=repeats, warmup=10)
            row["dense_ms"] = round(cmp.baseline_ms, 5)
            row[f"{fmt}_ms"] = round(cmp.candidate_ms, 5)
            row["threads"] = cmp.threads
            if cmp.speedup > best_speed:
                best, best_speed = fmt, cmp.speedup
        if best != "dense" and best_speed >= min_speedup:
            _set_module(out, n, _build(m, best, blocksize).eval())
            row.update(chosen=best, speedup=round(best_speed, 3), reason=f"{best} {best_speed:.2f}x faster than dense")
        else:
            row.update(chosen="dense", reason=f"no sparse format beat dense by {min_speedup}x (best {best_speed:.2f}x)")
        log.info("sparse exec %s: %s (%s)", n, row["chosen"], row["reason"])
    if verify:
        got = first_tensor(run_forward(out, inputs))
        scale = float(reference.abs().max()) or 1.0
        if not torch.allclose(got, reference, rtol=rtol * 10, atol=atol * 10 * scale):
            raise VerificationError(
                f"sparse execution changed the outputs (max abs diff {float((got - reference).abs().max()):.3g})"
            )
    return out, table


def crossover(
    in_features: int,
    out_features: int,
    batch_size: int,
    *,
    sparsities: Sequence[float] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99),
    fmt: str = "csr",
    threads: int | None = None,
    repeats: int = 100,
    seed: int = 0,
) -> dict:
    """Speedup of `fmt` over dense for a random unstructured (out × in) Linear at each sparsity.

    Returns ``{"rows": [{"sparsity", "dense_ms", "sparse_ms", "speedup"}], "crossover": s}`` where
    ``s`` is the lowest sparsity from which on every measured point is faster than dense (None if
    none).

    Example:
        >>> r = crossover(64, 64, 1, sparsities=(0.9,), repeats=5)
        >>> sorted(r)
        ['crossover', 'rows']
    """
    from ...measure import compare_latency

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, in_features, generator=g)
    rows = []
    for s in sparsities:
        dense = nn.Linear(in_features, out_features)
        with torch.no_grad():
            dense.weight.mul_(torch.rand(dense.weight.shape, generator=g) >= s)
        sp = SparseLinear.from_dense(dense, fmt).eval()
        cmp = compare_latency(dense, sp, (x,), threads=threads, repeats=repeats)
        rows.append({"sparsity": s, "dense_ms": cmp.baseline_ms, "sparse_ms": cmp.candidate_ms,
                     "speedup": cmp.speedup})
    cross = None
    for r in reversed(rows):
        if r["speedup"] > 1.0:
            cross = r["sparsity"]
        else:
            break
    return {"rows": rows, "crossover": cross}
