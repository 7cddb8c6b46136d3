"""Data-driven channel selection and refit (ThiNet, Luo et al. 2017; He et al. 2017).

For every consumer of a group (a Linear, or a Conv with groups=1, whose input columns belong to
the group) the calibration inputs give ``A = X^T X`` (conv: over unfolded patches). The output
``Y = X W^T`` is a sum of per-channel contributions ``z_c``; their Gram matrix is
``G = A o (W^T W)`` summed over each class's columns. ThiNet removes greedily the class that
keeps ``|| sum_removed z ||^2`` (the reconstruction error of the consumer's output) smallest.
Afterwards each consumer's kept columns are refit by ridge least squares,
``W_S^T = (A_SS + l I)^-1 A_S: W^T``, so the consumer reproduces its original output from the
channels that remain.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> stats = collect_input_grams(m, ["2"], [torch.randn(16, 4)], 1)
    >>> stats["2"].shape
    torch.Size([8, 8])
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import CalibrationError
from ...graph.group import Group
from ...inputs import iter_inputs

log = logging.getLogger(__name__)

MAX_CONV_ROWS = 2048  # sampled patch rows per batch for conv consumers


def consumer_keys(model: nn.Module, group: Group) -> list[tuple[str, str]]:
    """(module name, weight name) of the group's consumers: Linear / Conv(groups=1) input columns."""
    out = []
    for name, dim in group.members:
        mod_name, _, leaf = name.rpartition(".")
        if leaf != "weight" or dim != 1:
            continue
        mod = model.get_submodule(mod_name) if mod_name else model
        if isinstance(mod, nn.Linear) or (
            isinstance(mod, nn.modules.conv._ConvNd) and not mod.transposed and mod.groups == 1
            and mod.padding_mode == "zeros"
        ):
            out.append((mod_name, name))
    return out


def _rows(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(mod, nn.Linear):
        return x.reshape(-1, x.shape[-1]).float()
    if isinstance(mod, nn.Conv2d):
        cols = nn.functional.unfold(x.float(), mod.kernel_size, mod.dilation, mod.padding, mod.stride)
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    elif isinstance(mod, nn.Conv1d):
        xp = nn.functional.pad(x.float(), (mod.padding[0], mod.padding[0])) if isinstance(mod.padding, tuple) else x
        cols = nn.functional.unfold(xp.unsqueeze(-1), (mod.kernel_size[0], 1), (mod.dilation[0], 1), 0,
                                    (mod.stride[0], 1))
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    else:
        raise CalibrationError(f"no patch extraction for {type(mod).__name__}")
    if rows.shape[0] > MAX_CONV_ROWS:
        g = torch.Generator().manual_seed(rows.shape[0])
        rows = rows[torch.randperm(rows.shape[0], generator=g)[:MAX_CONV_ROWS]]
    return rows


def collect_input_grams(model: nn.Module, modules: list[str], calib_data: Any, n_inputs: int,
                        limit: int = 64) -> dict[str, torch.Tensor]:
    """``A = X^T X / rows`` of the inputs of each module in `modules` over `calib_data` (float64)."""
    grams: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []
    for name in modules:
        mod = model.get_submodule(name) if name else model

        def hook(m, args, name=name):
            rows = _rows(m, args[0].detach()).double()
            g = rows.T @ rows
            grams[name] = grams[name] + g if name in grams else g
            counts[name] = counts.get(name, 0) + rows.shape[0]

        handles.append(mod.register_forward_pre_hook(hook))
    n = 0
    try:
        with torch.no_grad():
            for batch in iter_inputs(calib_data, n_inputs, limit=limit):
                model(*batch)
                n += 1
    finally:
        for h in handles:
            h.remove()
    if n == 0:
        raise CalibrationError("calib_data yielded no batches")
    return {k: g / max(counts[k], 1) for k, g in grams.items()}


def _col_gram(w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Gram of per-input-channel output contributions of a consumer with weight `w`."""
    cin = w.shape[1]
    wf = w.detach().double().reshape(w.shape[0], -1)
    full = a * (wf.T @ wf)
    k = wf.shape[1] // cin
    if k == 1:
        return full
    return full.reshape(cin, k, cin, k).sum((1, 3))


def thinet_scores(model: nn.Module, group: Group, grams: dict[str, torch.Tensor]) -> np.ndarray | None:
    """Greedy ThiNet order as scores (the class removed first scores lowest); None without consumers."""
    n = group.n_classes
    total = np.zeros((n, n))
    used = False
    for mod_name, wname in consumer_keys(model, group):
        if mod_name not in grams:
            continue
        w = model.get_submodule(mod_name).weight
        gc = _col_gram(w, grams[mod_name]).numpy()
        p = np.zeros((gc.shape[0], n))
        for c, idx in enumerate(group.members[(wname, 1)]):
            p[idx, c] = 1.0
        g = p.T @ gc @ p
        energy = max(float(gc.sum()), 1e-12)
        total += g / energy
        used = True
    if not used:
        return None
    cand = ~group.frozen.copy()
    s = np.zeros(n)
    order = np.full(n, float(n), dtype=np.float64)
    diag = np.diag(total)
    for step in range(int(cand.sum())):
        cost = 2 * s + diag
        cost[~cand] = np.inf
        j = int(np.argmin(cost))
        order[j] = step
        cand[j] = False
        s += total[j]
    return order


def refit(model: nn.Module, removed_cols: dict[str, np.ndarray], grams: dict[str, torch.Tensor],
          ridge: float = 1e-4) -> None:
    """Refit the kept input columns of each consumer (module name -> removed input channels)."""
    for mod_name, removed in removed_cols.items():
        if mod_name not in grams or len(removed) == 0:
            continue
        mod = model.get_submodule(mod_name)
        w = mod.weight
        cin = w.shape[1]
        k = w[0].numel() // cin
        keep_ch = np.setdiff1d(np.arange(cin), removed)
        keep = torch.as_tensor((keep_ch[:, None] * k + np.arange(k)[None, :]).reshape(-1))
        a = grams[mod_name]
        wf = w.detach().double().reshape(w.shape[0], -1)
        a_ss = a[keep][:, keep]
        lam = ridge * float(torch.diagonal(a_ss).mean()) + 1e-12
        rhs = a[keep] @ wf.T
        sol = torch.linalg.solve(a_ss + lam * torch.eye(len(keep), dtype=a.dtype), rhs)
        new = torch.zeros_like(wf)
        new[:, keep] = sol.T
        with torch.no_grad():
            w.copy_(new.reshape(w.shape).to(w.dtype))


def _paired_stats(work: nn.Module, original: nn.Module, modules: list[str], calib_data: Any, n_inputs: int,
                  limit: int = 64) -> dict[str, dict[str, torch.Tensor]]:
    """Per consumer: E[x x^T], E[x x0^T], E[x], E[x0] with x from `work`, x0 from `original`."""
    cur: dict[str, dict[str, torch.Tensor]] = {}
    stats: dict[str, dict[str, torch.Tensor]] = {}
    handles = []
    for model, tag in ((work, "w"), (original, "o")):
        for name in modules:
            def hook(m, args, name=name, tag=tag):
                cur.setdefault(name, {})[tag] = _rows(m, args[0].detach()).double()

            handles.append(model.get_submodule(name).register_forward_pre_hook(hook))
    n = 0
    try:
        with torch.no_grad():
            for batch in iter_inputs(calib_data, n_inputs, limit=limit):
                cur.clear()
                work(*batch)
                original(*batch)
                for name, d in cur.items():
                    xw, xo = d["w"], d["o"]
                    s = stats.setdefault(name, {"A": 0, "B": 0, "mw": 0, "mo": 0, "n": 0})
                    s["A"] = s["A"] + xw.T @ xw
                    s["B"] = s["B"] + xw.T @ xo
                    s["mw"] = s["mw"] + xw.sum(0)
                    s["mo"] = s["mo"] + xo.sum(0)
                    s["n"] += xw.shape[0]
                n += 1
    finally:
        for h in handles:
            h.remove()
    if n == 0:
        raise CalibrationError("calib_data yielded no batches")
    return {k: {"A": s["A"] / s["n"], "B": s["B"] / s["n"], "mw": s["mw"] / s["n"], "mo": s["mo"] / s["n"]}
            for k, s in stats.items()}


def _refit_one(work_mod: nn.Module, orig_mod: nn.Module, st: dict[str, torch.Tensor], removed: np.ndarray,
               ridge: float) -> None:
    w = work_mod.weight
    cin = w.shape[1]
    k = w[0].numel() // cin
    keep_ch = np.setdiff1d(np.arange(cin), removed)
    keep = torch.as_tensor((keep_ch[:, None] * k + np.arange(k)[None, :]).reshape(-1))
    w0 = orig_mod.weight.detach().double().reshape(w.shape[0], -1)
    a, b = st["A"], st["B"]
    has_bias = work_mod.bias is not None and orig_mod.bias is not None
    if has_bias:  # fit an intercept too: the mean contribution of removed channels moves to the bias
        a = a - torch.outer(st["mw"], st["mw"])
        b = b - torch.outer(st["mw"], st["mo"])
    a_ss = a[keep][:, keep]
    lam = ridge * float(torch.diagonal(a_ss).mean().clamp(min=1e-12))
    sol = torch.linalg.solve(a_ss + lam * torch.eye(len(keep), dtype=a.dtype), b[keep] @ w0.T)  # (S, out)
    new = torch.zeros_like(w0)
    new[:, keep] = sol.T
    with torch.no_grad():
        w.copy_(new.reshape(w.shape).to(w.dtype))
        if has_bias:
            b0 = orig_mod.bias.detach().double()
            bias = b0 + st["mo"] @ w0.T - st["mw"][keep] @ sol
            work_mod.bias.copy_(bias.to(w.dtype))


def sequential_reconstruct(work: nn.Module, original: nn.Module, plan: list[tuple[Group, int]], calib_data: Any,
                           n_inputs: int, ridge: float = 1e-3) -> dict[Group, np.ndarray]:
    """ThiNet / He et al. layer by layer: for each group (in execution order) choose the classes whose
    removal least disturbs the consumers' outputs on activations of the already-pruned `work` model,
    then refit the consumers (weights and bias) to the *original* outputs. Removed input columns
    are zeroed in `work`, so slicing them away afterwards is exact.

    Args:
        plan: ``(group, number of classes to remove)`` in execution order.

    Returns:
        group -> removed class indices. Groups without a Linear/Conv consumer are not in it.
    """
    removal: dict[Group, np.ndarray] = {}
    gone_cols: dict[str, np.ndarray] = {}
    was = original.training
    original.eval()
    try:
        _sequential(work, original, plan, calib_data, n_inputs, ridge, removal, gone_cols)
    finally:
        original.train(was)
    return removal


def _sequential(work, original, plan, calib_data, n_inputs, ridge, removal, gone_cols) -> None:
    for g, n_remove in plan:
        cons = consumer_keys(work, g)
        if not cons or n_remove <= 0:
            continue
        mods = sorted({m for m, _ in cons})
        stats = _paired_stats(work, original, mods, calib_data, n_inputs)
        grams = {m: s["A"] for m, s in stats.items()}
        order = thinet_scores(work, g, grams)
        if order is None:
            continue
        s = np.where(g.frozen, np.inf, order)
        rm = np.sort(np.argsort(s, kind="stable")[:n_remove])
        g.check(rm)
        removal[g] = rm
        idx = g.removed_indices(rm)
        for mod_name, wname in cons:
            cols = np.union1d(gone_cols.get(mod_name, np.zeros(0, dtype=np.int64)), idx[(wname, 1)])
            gone_cols[mod_name] = cols
            _refit_one(work.get_submodule(mod_name), original.get_submodule(mod_name), stats[mod_name], cols, ridge)
