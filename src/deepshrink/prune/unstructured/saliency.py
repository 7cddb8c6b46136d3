"""Data-driven saliency: Optimal Brain Damage, layer-wise Optimal Brain Surgeon, and APoZ.

- `obd` (LeCun et al., 1990): saliency ``½·H_ii·w_i²`` with the diagonal Hessian estimated by
  the empirical Fisher (squared mini-batch gradients of the task loss).
- `obs` (Hassibi & Stork, 1993, made layer-wise as in OBC/SparseGPT): for each Linear / Conv2d
  layer, the Hessian of its squared output error is ``H = 2XᵀX`` from its calibration inputs.
  Columns are processed left to right with the Cholesky factor of ``H⁻¹``; each pruned weight's
  error is pushed onto the not-yet-processed weights of its row (the OBS update
  ``δw = -w_q / [H⁻¹]_qq · H⁻¹_{:,q}``), so the kept weights compensate. Weights to prune are
  chosen per block of columns by the OBS saliency ``w²/[H⁻¹]_qq²``. Layers are solved in order, each
  on the inputs produced by the already-pruned layers before it.
- `apoz` / `apoz_prune` (Hu et al., 2016): Average Percentage of Zeros of a fully connected
  layer's ReLU outputs; the neurons that are almost always zero are pruned (their weight row and
  bias masked to zero — physical removal is `deepshrink.prune.channels`' job).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.prune.unstructured.saliency import obs
    >>> m = nn.Sequential(nn.Linear(16, 8))
    >>> p = obs(m, 0.5, [torch.randn(64, 16)])
    >>> int((p[0].weight == 0).sum())
    64
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from ...errors import CalibrationError, InputError
from ...inputs import first_tensor, iter_inputs, run_forward
from ...selectors import override_for, select
from .constraints import constrain
from .magnitude import prune_by_scores_
from .masks import Target, check_sparsity, compute_mask, parse_granularity

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Optimal Brain Damage


def fisher_diagonal(
    model: nn.Module,
    data: Iterable,
    *,
    loss: Callable | None = None,
    n_inputs: int = 1,
    max_batches: int | None = None,
) -> dict[str, torch.Tensor]:
    """Empirical Fisher diagonal ``Σ_batches g²`` per parameter name (a diagonal Hessian estimate).

    Batches without a target use the model's own arg-max predictions as labels.
    """
    from ...distill.loop import default_loss

    loss_fn = loss or default_loss
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()
    count = 0
    for i, batch in enumerate(iter_inputs(data)):
        if max_batches is not None and i >= max_batches:
            break
        inputs = batch[:n_inputs]
        out = model(*inputs)
        if len(batch) > n_inputs:
            target = batch[n_inputs]
        else:
            target = first_tensor(out).detach().argmax(-1)
        model.zero_grad(set_to_none=True)
        loss_fn(out, target).backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
        count += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    if count == 0:
        raise CalibrationError("OBD/Fisher estimate got no data batches")
    return fisher


def obd_(
    model: nn.Module,
    sparsity: float,
    data: Iterable,
    *,
    loss: Callable | None = None,
    n_inputs: int = 1,
    max_batches: int | None = None,
    scope: str = "global",
    exclude: Sequence[str] = (),
    include: Sequence[str] | None = None,
    overrides: dict | Sequence | None = None,
    granularity: str = "weight",
) -> list[dict]:
    """In-place OBD pruning; returns the per-tensor report rows (see `obd`)."""
    fisher = fisher_diagonal(model, data, loss=loss, n_inputs=n_inputs, max_batches=max_batches)

    def score(t: Target) -> torch.Tensor:
        w = t.tensor.detach()
        return 0.5 * fisher[t.name] * w * w

    return prune_by_scores_(
        model, sparsity, score, scope=scope, exclude=exclude, include=include, overrides=overrides,
        granularity=granularity,
    )


def obd(model: nn.Module, sparsity: float, data: Iterable, **kwargs) -> nn.Module:
    """A copy of `model` pruned by Optimal Brain Damage saliency ``½·F_ii·w_i²``.

    Takes the arguments of `deepshrink.prune.magnitude` plus `data` (batches ``(*inputs,
    target)``), `loss`, `n_inputs` and `max_batches` for the Fisher estimate. Masks persist as
    with `magnitude`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> data = [(torch.randn(32, 8), torch.randint(0, 3, (32,)))]
        >>> p = obd(nn.Sequential(nn.Linear(8, 3)), 0.5, data)
        >>> int((p[0].weight == 0).sum())
        12
    """
    model = copy.deepcopy(model)
    obd_(model, sparsity, data, **kwargs)
    return model


# ---------------------------------------------------------------------------------------------
# layer-wise Optimal Brain Surgeon


def _layer_inputs(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Rows of the matrix X with ``output = X @ Wᵀ`` for a Linear or (groups=1) Conv2d."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    cols = nn.functional.unfold(
        x, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride
    )  # (N, C*kh*kw, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _hessian(model: nn.Module, module: nn.Module, data: Iterable, n_inputs: int, max_batches: int | None):
    h, n = None, 0

    def hook(mod, args):
        nonlocal h, n
        x = _layer_inputs(mod, args[0].detach().float())
        hh = x.T @ x
        h = hh if h is None else h + hh
        n += x.shape[0]

    handle = module.register_forward_pre_hook(hook)
    try:
        for i, batch in enumerate(iter_inputs(data, n_inputs)):
            if max_batches is not None and i >= max_batches:
                break
            run_forward(model, batch)
    finally:
        handle.remove()
    if h is None:
        raise CalibrationError("OBS got no calibration batches")
    return 2.0 * h / n


@torch.no_grad()
def obs_solve(
    weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, *, nm: tuple[int, int] | None = None,
    blocksize: int = 128, damp: float = 0.01,
) -> torch.Tensor:
    """Prune a 2-D `weight` (out × in) to `sparsity` with OBS updates given ``H`` (in × in).

    Returns the new weight (pruned entries exactly zero). `nm=(N, M)` prunes N:M along inputs.
    """
    w = weight.detach().clone().float()
    rows, cols = w.shape
    h = hessian.detach().clone().double()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(cols, dtype=h.dtype)
    try:
        hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
        hinv = torch.linalg.cholesky(hinv, upper=True).float()
    except RuntimeError as exc:  # not positive definite even with damping
        raise CalibrationError(f"OBS: layer Hessian is singular ({exc}); use more calibration data") from exc
    mask = torch.zeros_like(w, dtype=torch.bool)  # True = pruned
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        if nm is None:
            tmp = w1**2 / (torch.diag(hinv1).reshape(1, -1)) ** 2
            k = int(round(tmp.numel() * sparsity))
            mask1 = torch.zeros_like(w1, dtype=torch.bool)
            if k > 0:
                mask1.view(-1)[torch.topk(tmp.view(-1), k, largest=False).indices] = True
        else:
            mask1 = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(count):
            col = w1[:, i]
            d = hinv1[i, i]
            if nm is not None and i % nm[1] == 0:
                tmp = w1[:, i : i + nm[1]] ** 2 / (torch.diag(hinv1)[i : i + nm[1]].reshape(1, -1)) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, nm[1] - nm[0], dim=1, largest=False).indices, True)
            q = col.clone()
            q[mask1[:, i]] = 0.0
            q1[:, i] = q
            e = (col - q) / d
            w1[:, i:] -= e.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            err1[:, i] = e
        w[:, i1:i2] = q1
        mask[:, i1:i2] = mask1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    w[mask] = 0.0
    return w.to(weight.dtype)


def obs_(
    model: nn.Module,
    sparsity: float,
    calib_data: Iterable,
    *,
    exclude: Sequence[str] = (),
    include: Sequence[str] | None = None,
    overrides: dict | Sequence | None = None,
    granularity: str = "weight",
    n_inputs: int = 1,
    max_batches: int | None = None,
    blocksize: int = 128,
    damp: float = 0.01,
) -> list[dict]:
    """In-place layer-wise OBS pruning; returns per-layer report rows (see `obs`)."""
    check_sparsity(sparsity)
    modules = dict(model.named_modules())
    cands = [
        n for n, m in modules.items()
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros")
    ]
    names = select(model, include=include, exclude=exclude, candidates=cands)
    if not names:
        raise InputError("OBS found no Linear or Conv2d layer to prune")
    rows = []
    for name in names:
        m = modules[name]
        ov = override_for(name, m, overrides, None)
        s, g = sparsity, parse_granularity(granularity)
        if isinstance(ov, dict):
            s = check_sparsity(ov.get("sparsity", sparsity), f"override sparsity of {name!r}")
            g = parse_granularity(ov.get("granularity", granularity))
        elif ov is not None:
            s = check_sparsity(ov, f"override sparsity of {name!r}")
        row = {"layer": f"{name}.weight", "granularity": str(g), "numel": m.weight.numel(), "target": s}
        if g.kind not in ("weight", "nm"):
            row["skipped"] = f"OBS supports weight and N:M granularity, not {g}"
            rows.append(row)
            continue
        if g.kind == "weight" and s * m.weight.numel() < 1:
            row["skipped"] = "nothing to prune at this sparsity"
            rows.append(row)
            continue
        w2 = m.weight.detach().reshape(m.weight.shape[0], -1)
        if g.kind == "nm" and w2.shape[1] % g.m:
            row["skipped"] = f"N:M {g} needs the input width ({w2.shape[1]}) divisible by {g.m}"
            rows.append(row)
            continue
        h = _hessian(model, m, calib_data, n_inputs, max_batches)
        new = obs_solve(w2, h, s, nm=(g.n, g.m) if g.kind == "nm" else None, blocksize=blocksize, damp=damp)
        with torch.no_grad():
            m.weight.copy_(new.view_as(m.weight))
        constrain(m, "weight", "mask", m.weight.detach() != 0)
        row["sparsity"] = round(float((m.weight == 0).float().mean()), 6)
        rows.append(row)
    return rows


def obs(model: nn.Module, sparsity: float, calib_data: Iterable, **kwargs) -> nn.Module:
    """A copy of `model` pruned layer by layer with Optimal Brain Surgeon weight compensation.

    Args:
        model: the model (left untouched).
        sparsity: per-layer sparsity in [0, 1) (`overrides` per selector as in `magnitude`).
        calib_data: input batches (labels ignored) to estimate each layer's Hessian ``2XᵀX``.
        exclude, include, overrides: layer selectors (Linear and groups=1 Conv2d layers).
        granularity: ``"weight"`` or ``"N:M"``.
        n_inputs, max_batches: how many leading batch items are inputs; batches to use.
        blocksize, damp: columns solved per block; Hessian damping (fraction of its mean diagonal).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> p = obs(nn.Sequential(nn.Linear(8, 4)), 0.5, [torch.randn(32, 8)], granularity="2:4")
        >>> int((p[0].weight == 0).sum())
        16
    """
    model = copy.deepcopy(model)
    obs_(model, sparsity, calib_data, **kwargs)
    return model


# ---------------------------------------------------------------------------------------------
# APoZ neuron pruning


@torch.no_grad()
def apoz(
    model: nn.Module,
    calib_data: Iterable,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    n_inputs: int = 1,
    max_batches: int | None = None,
) -> dict[str, torch.Tensor]:
    """Average Percentage of Zeros of ``relu(output)`` per output neuron of each Linear layer.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> a = apoz(nn.Sequential(nn.Linear(4, 3)), [torch.randn(10, 4)])
        >>> a["0"].shape
        torch.Size([3])
    """
    modules = dict(model.named_modules())
    names = select(model, include=include, exclude=exclude,
                   candidates=[n for n, m in modules.items() if isinstance(m, nn.Linear)])
    zeros = {n: None for n in names}
    counts = dict.fromkeys(names, 0)
    handles = []
    for n in names:
        def hook(mod, args, out, n=n):
            z = (out.detach() <= 0).reshape(-1, out.shape[-1]).float()
            zeros[n] = z.sum(0) if zeros[n] is None else zeros[n] + z.sum(0)
            counts[n] += z.shape[0]

        handles.append(modules[n].register_forward_hook(hook))
    try:
        for i, batch in enumerate(iter_inputs(calib_data, n_inputs)):
            if max_batches is not None and i >= max_batches:
                break
            run_forward(model, batch)
    finally:
        for h in handles:
            h.remove()
    if not any(counts.values()):
        raise CalibrationError("APoZ got no calibration batches")
    return {n: zeros[n] / counts[n] for n in names if counts[n]}


def apoz_prune(
    model: nn.Module,
    ratio: float,
    calib_data: Iterable,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    overrides: dict | Sequence | None = None,
    n_inputs: int = 1,
    max_batches: int | None = None,
    keep_output_layer: bool = True,
) -> nn.Module:
    """A copy of `model` whose `ratio` of neurons with the highest APoZ per Linear layer are zeroed
    (weight row and bias masked), kept zero through training like `magnitude`'s masks.

    The last Linear layer (the model's outputs) is left alone unless `keep_output_layer=False`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> p = apoz_prune(m, 0.5, [torch.randn(32, 4)])
        >>> int((p[0].weight.abs().sum(1) == 0).sum())
        4
    """
    check_sparsity(ratio, "ratio")
    model = copy.deepcopy(model)
    stats = apoz(model, calib_data, include=include, exclude=exclude, n_inputs=n_inputs, max_batches=max_batches)
    modules = dict(model.named_modules())
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    for name, a in stats.items():
        if keep_output_layer and linears and name == linears[-1]:
            log.info("APoZ: leaving output layer %s unpruned", name)
            continue
        r = override_for(name, modules[name], overrides, ratio)
        check_sparsity(r, f"ratio of {name!r}")
        keep = compute_mask(-a, r, parse_granularity("weight"), is_conv=False)  # high APoZ = low score
        m = modules[name]
        constrain(m, "weight", "mask", keep[:, None].expand_as(m.weight))
        if m.bias is not None:
            constrain(m, "bias", "mask", keep)
    return model


__all__ = ["apoz", "apoz_prune", "fisher_diagonal", "obd", "obd_", "obs", "obs_", "obs_solve"]
