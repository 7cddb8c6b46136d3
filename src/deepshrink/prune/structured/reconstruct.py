"""Data-driven channel selection and refit (ThiNet, Luo et al. 2017; He et al. 2017; OBS-style
structured pruning with a least-squares refit and bias compensation, Kurtic et al. 2023, An et al. 2024).

For every consumer of a group (a Linear, or a Conv with groups=1, whose input columns belong to
the group) the calibration inputs give the centered covariance ``C = E[(x - mu)(x - mu)^T]``
(conv: over unfolded patches) and the mean ``mu``. Rows of padding tokens are left out: a batch
``(input_ids, attention_mask, ...)`` whose later item is a 0/1 mask shaped like the first input's
two leading dims counts only the rows where the mask is 1.

Selection (greedy, one class at a time, Optimal Brain Surgeon on ``H = C + l I``): removing the
columns ``S`` of class ``c`` costs ``tr(W_S (H^-1)_SS^-1 W_S^T)``, the output error left after the
kept columns are refit; the cheapest class goes, the other columns absorb its contribution and
``H^-1`` is downdated. The refit is ridge least squares pulled towards the original weights,
``W_K^T = (C_KK + l I)^-1 (C_K: W0^T + l W0_K^T)``: with ``l`` a share (``ridge``) of the mean
diagonal of ``C_KK``, so that a calibration set that covers few directions cannot drag the weights
far from what generalizes. The removed columns' mean contribution moves to the bias
(``b = b0 + W0 mu - W_K mu_K``). `sequential_reconstruct` does this layer by layer, reading inputs
from the already-pruned model and fitting to the original model's outputs, so errors do not compound.

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
RIDGE = 0.1  # refit regularization towards the original weights, as a share of the mean input variance


class _Stop(Exception):
    """Raised by a hook once every module of interest has seen its input (ends the forward early)."""


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


def token_mask(batch: tuple) -> torch.Tensor | None:
    """The padding mask of a ``(input_ids, attention_mask, ...)`` batch, as bool ``(batch, seq)``.

    A later item counts as the mask when it is a 2-D tensor of 0/1 shaped like the first item's two
    leading dims (Hugging Face tokenizer output); None when there is none or it masks nothing.
    """
    if len(batch) < 2 or not isinstance(batch[0], torch.Tensor) or batch[0].dim() < 2:
        return None
    lead = tuple(batch[0].shape[:2])
    for t in batch[1:]:
        if isinstance(t, torch.Tensor) and t.dim() == 2 and tuple(t.shape) == lead and t.numel():
            if t.dtype == torch.bool:
                m = t
            elif bool(((t == 0) | (t == 1)).all()):
                m = t != 0
            else:
                continue
            return None if bool(m.all()) else m
    return None


def _rows(mod: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(mod, nn.Linear):
        if mask is not None and x.dim() >= 3 and tuple(x.shape[:2]) == tuple(mask.shape):
            return x[mask.to(x.device)].reshape(-1, x.shape[-1]).float()
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


def _capture(model: nn.Module, modules: list[str], batch: tuple, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Input rows of each module in `modules` for one batch; stops the forward once all are seen."""
    got: dict[str, torch.Tensor] = {}
    handles = []
    want = set(modules)

    for name in modules:
        def hook(m, args, name=name):
            if name not in got:
                got[name] = _rows(m, args[0].detach(), mask).double()
            if want <= got.keys():
                raise _Stop

        handles.append((model.get_submodule(name) if name else model).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(*batch)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return got


def collect_input_stats(model: nn.Module, modules: list[str], calib_data: Any, n_inputs: int, limit: int = 64,
                        original: nn.Module | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Per module: ``A = E[x x^T]``, ``mean = E[x]`` over non-padding rows of `calib_data` (float64).

    With `original` (same architecture), also ``B = E[x x0^T]`` and ``mean0 = E[x0]`` where ``x0`` is the
    input of the same module in `original` on the same rows.
    """
    acc: dict[str, dict[str, Any]] = {}
    n = 0
    for batch in iter_inputs(calib_data, n_inputs, limit=limit):
        mask = token_mask(batch)
        cur = _capture(model, modules, batch, mask)
        ref = _capture(original, modules, batch, mask) if original is not None else None
        for name, x in cur.items():
            s = acc.setdefault(name, {"A": 0, "mean": 0, "B": 0, "mean0": 0, "n": 0})
            s["A"] = s["A"] + x.T @ x
            s["mean"] = s["mean"] + x.sum(0)
            if ref is not None:
                x0 = ref[name]
                if x0.shape != x.shape:
                    raise CalibrationError(f"{name}: inputs of the pruned and the original model differ in shape")
                s["B"] = s["B"] + x.T @ x0
                s["mean0"] = s["mean0"] + x0.sum(0)
            s["n"] += x.shape[0]
        n += 1
    if n == 0:
        raise CalibrationError("calib_data yielded no batches")
    out = {}
    for k, s in acc.items():
        c = max(s["n"], 1)
        d = {"A": s["A"] / c, "mean": s["mean"] / c}
        if original is not None:
            d["B"], d["mean0"] = s["B"] / c, s["mean0"] / c
        out[k] = d
    return out


def collect_input_grams(model: nn.Module, modules: list[str], calib_data: Any, n_inputs: int,
                        limit: int = 64) -> dict[str, torch.Tensor]:
    """``A = X^T X / rows`` of the inputs of each module in `modules` over `calib_data` (float64)."""
    return {k: s["A"] for k, s in collect_input_stats(model, modules, calib_data, n_inputs, limit).items()}


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


def _columns(mod: nn.Module, channels: np.ndarray) -> np.ndarray:
    """Flattened weight columns of input channels `channels` (conv: every kernel tap)."""
    w = mod.weight
    k = w[0].numel() // w.shape[1]
    channels = np.asarray(channels, dtype=np.int64)
    return (channels[:, None] * k + np.arange(k)[None, :]).reshape(-1)


def _centered(st: dict[str, torch.Tensor], bias: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(C, Cx): input covariance and cross-covariance with the original input (uncentered without bias)."""
    a = st["A"]
    b = st.get("B")
    if bias:
        a = a - torch.outer(st["mean"], st["mean"])
        if b is not None:
            b = b - torch.outer(st["mean"], st["mean0"])
    return a, b


class _Surgeon:
    """OBS state of one consumer: current weights (out, cols) and the inverse of ``C + l I``."""

    def __init__(self, w: torch.Tensor, cov: torch.Tensor, classes: list[np.ndarray], ridge: float):
        n = cov.shape[0]
        lam = ridge * float(torch.diagonal(cov).mean().clamp(min=1e-12)) + 1e-12
        self.hinv = torch.linalg.inv(cov + lam * torch.eye(n, dtype=cov.dtype))
        self.w = w.clone()
        self.classes = [torch.as_tensor(c, dtype=torch.long) for c in classes]
        self.energy = float(torch.einsum("oi,ij,oj->", w, cov, w).clamp(min=1e-12))
        sizes = {len(c) for c in classes}
        self.uniform = len(sizes) == 1 and 0 not in sizes
        if self.uniform:
            self.cols = torch.stack(self.classes)  # (n_classes, k)

    def costs(self) -> torch.Tensor:
        if self.uniform:
            idx = self.cols
            k = idx.shape[1]
            if k == 1:
                j = idx[:, 0]
                return self.w[:, j].pow(2).sum(0) / self.hinv[j, j].clamp(min=1e-30)
            blocks = self.hinv[idx[:, :, None], idx[:, None, :]]  # (n, k, k)
            wc = self.w[:, idx].permute(1, 2, 0)  # (n, k, out)
            sol = torch.linalg.solve(blocks, wc)
            return (wc * sol).sum((1, 2))
        out = torch.zeros(len(self.classes), dtype=self.w.dtype)
        for c, idx in enumerate(self.classes):
            if len(idx):
                wc = self.w[:, idx]
                out[c] = torch.trace(wc @ torch.linalg.solve(self.hinv[idx][:, idx], wc.T))
        return out

    def remove(self, c: int) -> None:
        idx = self.classes[c]
        if len(idx) == 0:
            return
        binv = torch.linalg.inv(self.hinv[idx][:, idx])
        rows = self.hinv[idx, :]
        self.w -= self.w[:, idx] @ binv @ rows
        self.hinv -= rows.T @ binv @ rows
        self.w[:, idx] = 0.0
        self.hinv[idx, :] = 0.0
        self.hinv[:, idx] = 0.0
        self.hinv[idx, idx] = 1.0


def obs_order(model: nn.Module, group: Group, stats: dict[str, dict[str, torch.Tensor]], n_remove: int,
              ridge: float = RIDGE, skip_cols: dict[str, np.ndarray] | None = None
              ) -> tuple[np.ndarray, np.ndarray] | None:
    """Greedy OBS removal of `n_remove` classes of `group`: (removed classes in order, cumulative cost
    as a share of the consumers' output energy). None when the group has no measured consumer."""
    surgeons = []
    for mod_name, wname in consumer_keys(model, group):
        if mod_name not in stats:
            continue
        mod = model.get_submodule(mod_name)
        cov, _ = _centered(stats[mod_name], mod.bias is not None)
        w = mod.weight.detach().double().reshape(mod.weight.shape[0], -1)
        classes = [_columns(mod, idx) for idx in group.members[(wname, 1)]]
        sur = _Surgeon(w, cov, classes, ridge)
        gone = (skip_cols or {}).get(mod_name)
        if gone is not None and len(gone):
            for c in _columns(mod, gone):
                sur.classes.append(torch.as_tensor([int(c)]))
                sur.remove(len(sur.classes) - 1)
            sur.classes = sur.classes[: group.n_classes]
        surgeons.append(sur)
    if not surgeons:
        return None
    alive = ~group.frozen.copy()
    order, cum = [], []
    total = 0.0
    for _ in range(min(n_remove, int(alive.sum()) - 1)):
        cost = sum(s.costs().numpy() / s.energy for s in surgeons)
        cost = np.where(alive, cost, np.inf)
        c = int(np.argmin(cost))
        total += float(cost[c])
        for s in surgeons:
            s.remove(c)
        alive[c] = False
        order.append(c)
        cum.append(total)
    return np.asarray(order, dtype=np.int64), np.asarray(cum)


def refit(model: nn.Module, removed_cols: dict[str, np.ndarray], grams: dict[str, Any],
          ridge: float = RIDGE, original: nn.Module | None = None) -> None:
    """Refit the kept input columns of each consumer (module name -> removed input channels).

    `grams` maps module name to either ``E[x x^T]`` or a `collect_input_stats` entry; with the
    latter the removed channels' mean contribution moves to the bias, and with paired statistics
    (``B``, ``mean0``) the target is the output of `original`'s module on the original inputs.
    """
    for mod_name, removed in removed_cols.items():
        if mod_name not in grams or len(removed) == 0:
            continue
        st = grams[mod_name]
        if isinstance(st, torch.Tensor):
            st = {"A": st, "mean": torch.zeros(st.shape[0], dtype=st.dtype)}
        mod = model.get_submodule(mod_name)
        ref = original.get_submodule(mod_name) if original is not None else mod
        _refit_one(mod, ref, st, removed, ridge)


def _refit_one(work_mod: nn.Module, orig_mod: nn.Module, st: dict[str, torch.Tensor], removed: np.ndarray,
               ridge: float) -> None:
    w = work_mod.weight
    n_cols = w[0].numel()
    keep = torch.as_tensor(np.setdiff1d(np.arange(n_cols), _columns(work_mod, removed)))
    w0 = orig_mod.weight.detach().double().reshape(w.shape[0], -1)
    has_bias = work_mod.bias is not None and orig_mod.bias is not None
    paired = "B" in st
    a, b = _centered(st, has_bias)
    if not paired:
        b = a
    a_ss = a[keep][:, keep]
    lam = ridge * float(torch.diagonal(a_ss).mean().clamp(min=1e-12)) + 1e-12
    rhs = b[keep] @ w0.T + lam * w0[:, keep].T
    sol = torch.linalg.solve(a_ss + lam * torch.eye(len(keep), dtype=a.dtype), rhs)  # (kept, out)
    new = torch.zeros_like(w0)
    new[:, keep] = sol.T
    with torch.no_grad():
        w.copy_(new.reshape(w.shape).to(w.dtype))
        if has_bias:
            mean0 = st["mean0"] if paired else st["mean"]
            bias = orig_mod.bias.detach().double() + mean0 @ w0.T - st["mean"][keep] @ sol
            work_mod.bias.copy_(bias.to(w.dtype))


def sequential_reconstruct(work: nn.Module, original: nn.Module, plan: list[tuple[Group, int]], calib_data: Any,
                           n_inputs: int, ridge: float = RIDGE) -> dict[Group, np.ndarray]:
    """Layer by layer: for each group (in execution order) choose, by greedy OBS on activations of the
    already-pruned `work` model, the classes whose removal least disturbs the consumers' outputs,
    then refit the consumers (weights and bias) to the *original* model's outputs. Removed input
    columns are zeroed in `work`, so slicing them away afterwards is exact.

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
        for g, n_remove in plan:
            cons = consumer_keys(work, g)
            if not cons or n_remove <= 0:
                continue
            mods = sorted({m for m, _ in cons})
            stats = collect_input_stats(work, mods, calib_data, n_inputs, original=original)
            res = obs_order(work, g, stats, n_remove, ridge, skip_cols=gone_cols)
            if res is None:
                continue
            rm = np.sort(res[0])
            if len(rm) == 0:
                continue
            g.check(rm)
            removal[g] = rm
            idx = g.removed_indices(rm)
            for mod_name, wname in cons:
                cols = np.union1d(gone_cols.get(mod_name, np.zeros(0, dtype=np.int64)), idx[(wname, 1)])
                gone_cols[mod_name] = cols
                _refit_one(work.get_submodule(mod_name), original.get_submodule(mod_name), stats[mod_name], cols,
                           ridge)
    finally:
        original.train(was)
    return removal


def allocate(model: nn.Module, groups: list[Group], calib_data: Any, n_inputs: int, ratio: float,
             round_to: int = 1, ridge: float = RIDGE, max_share: float = 0.8) -> dict[Group, int]:
    """Non-uniform budget: how many classes each group loses so that each kind of group ("heads",
    "channels", ...) loses `ratio` of its classes in all, the cheapest first by the OBS cost of each
    group (a share of its consumers' output energy, measured on `model`). No group loses more than
    `max_share` of its classes."""
    mods = sorted({m for g in groups for m, _ in consumer_keys(model, g)})
    stats = collect_input_stats(model, mods, calib_data, n_inputs) if mods else {}
    by_kind: dict[str, list[Group]] = {}
    for g in groups:
        by_kind.setdefault(g.kind, []).append(g)
    out: dict[Group, int] = {}
    for kind_groups in by_kind.values():
        pool = []
        for g in kind_groups:
            cap = min(int(max_share * g.n_classes), g.n_prunable - max(1, round_to))
            res = obs_order(model, g, stats, max(cap, 0), ridge)
            if res is None:
                continue
            for step, cost in enumerate(res[1]):
                pool.append((float(cost), g.gid, step))
        target = int(round(ratio * sum(g.n_classes for g in kind_groups)))
        pool.sort()
        count: dict[int, int] = {}
        for _, gid, _step in pool[:target]:
            count[gid] = count.get(gid, 0) + 1
        for g in kind_groups:
            k = count.get(g.gid, 0)
            if round_to > 1 and k:
                keep = max(int(round((g.n_classes - k) / round_to)) * round_to, round_to)
                k = g.n_classes - keep
            out[g] = max(k, 0)
    return out
