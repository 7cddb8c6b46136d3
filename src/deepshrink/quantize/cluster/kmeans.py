"""1-D clustering primitives for weight sharing: initializations, Lloyd (optionally weighted),
exact optimal 1-D k-means (`kmeans1d`), and uniform scalar quantization.

All functions take a 1-D float tensor of values (the surviving, non-zero weights) and return
``(centroids, assignment)`` with ``centroids`` sorted ascending (empty clusters dropped) and
``assignment[i]`` the index of the centroid of ``values[i]``.

Example:
    >>> import torch
    >>> from deepshrink.quantize.cluster.kmeans import kmeans
    >>> c, a = kmeans(torch.tensor([1.0, 1.1, 5.0, 5.2]), 2, exact=False)
    >>> [round(v, 2) for v in c.tolist()], a.tolist()
    ([1.05, 5.1], [0, 0, 1, 1])
"""

from __future__ import annotations

import torch

from ...errors import InputError

INITS = ("linear", "forgy", "density")
EXACT_LIMIT = 100_000  # kmeans1d is O(kn) but runs through Python lists: ~1.4 s at 235k values


def _have_kmeans1d() -> bool:
    import importlib.util

    return importlib.util.find_spec("kmeans1d") is not None


def init_centroids(values: torch.Tensor, k: int, init: str = "linear", *, seed: int = 0) -> torch.Tensor:
    """Initial centroids: ``linear`` (evenly spaced over [min, max], Han et al.'s best),
    ``forgy`` (k random weights) or ``density`` (evenly spaced over the CDF)."""
    v = values.detach().float().reshape(-1)
    if init == "linear":
        return torch.linspace(float(v.min()), float(v.max()), k)
    if init == "forgy":
        g = torch.Generator().manual_seed(seed)
        uniq = torch.unique(v)
        pick = torch.randperm(uniq.numel(), generator=g)[: min(k, uniq.numel())]
        return torch.sort(uniq[pick]).values
    if init == "density":
        s = torch.sort(v).values
        pos = torch.linspace(0, s.numel() - 1, k).round().long()
        return s[pos]
    raise InputError(f"unknown init {init!r}; use one of {INITS}")


def assign(values: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (`centroids` sorted ascending), vectorized with bucketize."""
    if centroids.numel() == 1:
        return torch.zeros(values.numel(), dtype=torch.long)
    mids = (centroids[1:] + centroids[:-1]) / 2
    return torch.bucketize(values, mids)


def _update(values: torch.Tensor, a: torch.Tensor, k: int, weights: torch.Tensor | None, old: torch.Tensor):
    w = torch.ones_like(values) if weights is None else weights
    num = torch.zeros(k, dtype=torch.float64).index_add_(0, a, (values * w).double())
    den = torch.zeros(k, dtype=torch.float64).index_add_(0, a, w.double())
    new = old.double().clone()
    ok = den > 0
    new[ok] = num[ok] / den[ok]
    return new.float(), ok


def _compact(values: torch.Tensor, centroids: torch.Tensor, a: torch.Tensor):
    """Drop empty clusters, sort, and reassign indices."""
    used = torch.unique(a)
    c = centroids[used]
    order = torch.argsort(c)
    c = c[order]
    remap = torch.empty(centroids.numel(), dtype=torch.long)
    remap[used[order]] = torch.arange(used.numel())
    return c, remap[a]


def lloyd(
    values: torch.Tensor, centroids: torch.Tensor, *, weights: torch.Tensor | None = None,
    iters: int = 50, tol: float = 0.0, reseed: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Weighted) Lloyd iterations from `centroids`, stopping when assignments stop changing.

    `reseed` moves empty clusters onto the worst-fit values instead of dropping them."""
    v = values.detach().float().reshape(-1)
    c = torch.sort(centroids.detach().float()).values
    a = assign(v, c)
    for _ in range(iters):
        c, ok = _update(v, a, c.numel(), weights, c)
        if reseed and not bool(ok.all()):
            # empty clusters move to the worst-fit values (as scikit-learn does), so the codebook
            # is not wasted when e.g. linear init lands in the gap left by pruning
            n_empty = int((~ok).sum())
            err = (v - c[a]) ** 2
            worst = torch.topk(err, min(n_empty, v.numel())).indices
            c[torch.nonzero(~ok).reshape(-1)[: worst.numel()]] = v[worst]
        c = torch.sort(c).values
        a_new = assign(v, c)
        changed = int((a_new != a).sum())
        a = a_new
        if changed <= tol * v.numel() and (not reseed or bool(torch.bincount(a, minlength=c.numel()).all())):
            break
    c, _ = _update(v, a, c.numel(), weights, c)
    return _compact(v, c, a)


def exact_kmeans(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal 1-D k-means (`kmeans1d`, O(kn) dynamic programming with SMAWK)."""
    try:
        import kmeans1d
    except ImportError as exc:
        from ...errors import BackendUnavailableError

        raise BackendUnavailableError("exact 1-D k-means needs the `kmeans1d` package (pip install kmeans1d)") from exc

    v = values.detach().double().reshape(-1).numpy()
    res = kmeans1d.cluster(v, k)
    c = torch.tensor(res.centroids, dtype=torch.float64).float()
    a = torch.tensor(res.clusters, dtype=torch.long)
    c, _ = _update(values.detach().float().reshape(-1), a, c.numel(), None, c)
    return _compact(values.reshape(-1), c, a)


def kmeans(
    values: torch.Tensor, k: int, *, init: str = "linear", exact: bool | None = None,
    weights: torch.Tensor | None = None, iters: int = 50, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of 1-D `values` into at most `k` clusters.

    Args:
        values: 1-D values.
        k: number of clusters.
        init: ``linear``, ``forgy`` or ``density`` (for Lloyd iterations).
        exact: use optimal 1-D k-means (`kmeans1d`); None = when there are at most `EXACT_LIMIT`
            values and no `weights`. The init does not matter then.
        weights: per-value weights (Hessian-weighted k-means, Choi et al.); Lloyd only.
        iters: Lloyd iterations at most.
        seed: for ``forgy``.
    """
    v = values.detach().float().reshape(-1)
    if v.numel() == 0:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    uniq = torch.unique(v)
    if uniq.numel() <= k:  # already at most k values: exact, nothing to move
        return uniq, torch.searchsorted(uniq, v)
    if exact is None:
        exact = weights is None and v.numel() <= EXACT_LIMIT and _have_kmeans1d()
    if exact:
        if weights is not None:
            raise InputError("exact 1-D k-means does not take weights; use exact=False")
        return exact_kmeans(v, k)
    return lloyd(v, init_centroids(v, k, init, seed=seed), weights=weights, iters=iters)


def uniform(values: torch.Tensor, k: int, *, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform scalar quantization (Choi et al.'s ECSQ at a fixed number of levels): `k` equal-width
    bins over [min, max]; each bin's shared value is the (Hessian-weighted) mean of its members."""
    v = values.detach().float().reshape(-1)
    if v.numel() == 0:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    uniq = torch.unique(v)
    if uniq.numel() <= k:
        return uniq, torch.searchsorted(uniq, v)
    grid = torch.linspace(float(v.min()), float(v.max()), k)
    a = assign(v, grid)
    c, _ = _update(v, a, k, weights, grid)
    return _compact(v, c, a)
