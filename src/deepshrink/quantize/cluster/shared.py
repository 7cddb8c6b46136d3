"""Weight sharing by per-layer clustering (Han et al.'s "trained quantization"; Choi et al.).

Each selected weight tensor's surviving (non-zero) values are clustered into at most ``2**bits``
shared values; zeros from pruning stay exactly zero and get no cluster. The assignment is kept as
a non-persistent buffer (``<param>_cidx``, -1 = zero) with gradient, optimizer-step and forward
hooks, so training keeps the sharing: every member receives its cluster's summed gradient and the
members are re-tied to their mean after each optimizer step (Han et al.'s centroid fine-tuning,
assignments fixed). ``state_dict`` keys are unchanged. `finalize` leaves plain tensors whose
values are exactly the centroids.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.quantize.cluster import cluster, distinct_values
    >>> m = cluster(nn.Linear(64, 32), 3)
    >>> distinct_values(m)["weight"] <= 8
    True
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from ...errors import InputError
from ...prune.unstructured.constraints import buffer_name, constrain, constraints_of, release_all
from ...prune.unstructured.masks import weight_names
from ...selectors import override_for, select
from .kmeans import INITS, kmeans, uniform

log = logging.getLogger(__name__)

METHODS = ("kmeans", "hessian", "uniform")


def _check_bits(bits, what: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise InputError(f"{what} must be an integer in [1, 16], got {bits!r}")
    return bits


def _param_names(module: nn.Module, cluster_bias: bool) -> list[str]:
    names = weight_names(module)
    if cluster_bias:
        names += [n for n, p in module.named_parameters(recurse=False) if n.startswith("bias") and p is not None]
    return names


def cluster_(
    model: nn.Module,
    bits: int,
    *,
    init: str = "linear",
    method: str = "kmeans",
    exclude: Sequence[str] = (),
    include: Sequence[str] | None = None,
    overrides: dict | Sequence | None = None,
    data: Iterable | None = None,
    loss: Callable | None = None,
    n_inputs: int = 1,
    max_batches: int | None = None,
    exact: bool | None = None,
    cluster_bias: bool = False,
    iters: int = 50,
    seed: int = 0,
) -> list[dict]:
    """Cluster `model` in place; returns per-tensor report rows (``layer``, ``bits``, ``values``,
    ``nonzero``, ``mse``, or ``skipped``). Arguments as `cluster`."""
    _check_bits(bits)
    if init not in INITS:
        raise InputError(f"unknown init {init!r}; use one of {INITS}")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use one of {METHODS}")
    modules = dict(model.named_modules())
    names = select(model, include=include, exclude=exclude,
                   candidates=[n for n, m in modules.items() if weight_names(m)])
    if not names:
        raise InputError(f"{type(model).__name__} has no weight tensors to cluster after include/exclude")
    hess = None
    if method == "hessian" or (method == "uniform" and data is not None):
        if data is None:
            raise InputError("method='hessian' needs data to estimate the diagonal Hessian")
        from ...prune.unstructured.saliency import fisher_diagonal

        hess = fisher_diagonal(model, data, loss=loss, n_inputs=n_inputs, max_batches=max_batches)
    rows = []
    seen: set[int] = set()  # tied weights are clustered once
    for name in names:
        m = modules[name]
        b = _check_bits(override_for(name, m, overrides, bits), f"bits of {name!r}")
        for pname in _param_names(m, cluster_bias):
            full = f"{name}.{pname}" if name else pname
            if id(getattr(m, pname)) in seen:
                log.info("%s is tied to a tensor already clustered", full)
                continue
            seen.add(id(getattr(m, pname)))
            w = getattr(m, pname).detach()
            flat = w.reshape(-1).float()
            live = flat != 0
            row = {"layer": full, "bits": b, "numel": w.numel(), "nonzero": int(live.sum())}
            if not bool(live.any()):
                row["skipped"] = "all weights are zero"
                rows.append(row)
                continue
            vals = flat[live]
            hw = None
            if hess is not None and full in hess:
                hw = hess[full].reshape(-1)[live].float().clamp_min(0) + 1e-12
            if method == "uniform":
                c, a = uniform(vals, 2**b, weights=hw)
            else:
                c, a = kmeans(vals, 2**b, init=init, exact=False if hw is not None else exact,
                              weights=hw, iters=iters, seed=seed)
            idx = torch.full((flat.numel(),), -1, dtype=torch.long)
            idx[live] = a
            constrain(m, pname, "cluster", idx.view(w.shape))
            new = getattr(m, pname).detach().reshape(-1)
            row["values"] = int(torch.unique(new[new != 0]).numel())
            row["mse"] = float(((new - flat) ** 2).mean())
            rows.append(row)
    return rows


def cluster(model: nn.Module, bits: int, **kwargs) -> nn.Module:
    """A copy of `model` whose weight tensors each hold at most ``2**bits`` distinct non-zero values.

    Args:
        model: the model (left untouched). Zeros (e.g. from pruning) stay zero and do not count.
        bits: bits per shared value (1–16); ``overrides={selector: bits}`` per layer.
        init: ``"linear"`` (default, best in Han et al.), ``"forgy"`` or ``"density"``.
        method: ``"kmeans"``; ``"hessian"`` (Hessian-weighted k-means, Choi et al., needs `data`);
            ``"uniform"`` (uniform bins, values the — Hessian-weighted when `data` is given —
            member means; Choi et al.'s choice for entropy coding).
        exclude, include: layer selectors (Linear, Conv, Embedding, RNN weights).
        data, loss, n_inputs, max_batches: labelled batches for the diagonal Hessian (Fisher).
        exact: optimal 1-D k-means via `kmeans1d`; None = where it pays (≤ 100k values, unweighted).
        cluster_bias: also share the biases' values (own codebook per bias).
        iters, seed: Lloyd iterations; seed for ``forgy``.

    Raises:
        InputError: bad bits/init/method, a selector matching nothing, or nothing to cluster.

    Example:
        >>> from torch import nn
        >>> m = cluster(nn.Linear(16, 16), 2, init="density", exact=False)
        >>> len(codebooks(m)["weight"]) <= 4
        True
    """
    model = copy.deepcopy(model)
    cluster_(model, bits, **kwargs)
    return model


def finetune_centroids(
    model: nn.Module,
    data: Iterable,
    *,
    epochs: float = 1,
    lr: float = 1e-4,
    loss: Callable | None = None,
    optimizer: str = "adam",
    only_centroids: bool = False,
    n_inputs: int = 1,
    progress: bool = False,
    seed: int | None = 0,
) -> nn.Module:
    """Fine-tune the shared values of a clustered model in place (assignments fixed); returns it.

    Each cluster's gradient is the sum of its members' gradients and all members move together,
    so the number of distinct values and the zeros are kept. With ``only_centroids=True`` only
    the clustered tensors train; otherwise biases and unclustered layers train too.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = cluster(nn.Linear(8, 2), 2)
        >>> data = [(torch.randn(16, 8), torch.randint(0, 2, (16,)))]
        >>> m = finetune_centroids(m, data, epochs=2)
        >>> len(codebooks(m)["weight"]) <= 4
        True
    """
    from ...distill.loop import fit

    params = None
    if only_centroids:
        params = [getattr(m, n) for _, m in model.named_modules()
                  for n, k in constraints_of(m).items() if k == "cluster"]
        if not params:
            raise InputError("finetune_centroids: the model has no clustered tensors")
    return fit(model, data, epochs=epochs, lr=lr, loss=loss, optimizer=optimizer, params=params,
               n_inputs=n_inputs, progress=progress, seed=seed)


def finalize(model: nn.Module) -> nn.Module:
    """Remove the cluster assignments and hooks in place; weights keep exactly the shared values."""
    return release_all(model, "cluster")


def assignments(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<module>.<param>": cluster index per weight (-1 = zero)}`` while clustering is active."""
    out = {}
    for mname, m in model.named_modules():
        for p, kind in constraints_of(m).items():
            if kind == "cluster":
                out[f"{mname}.{p}" if mname else p] = getattr(m, buffer_name(p, "cluster"))
    return out


def codebooks(model: nn.Module, *, include_bias: bool = False) -> dict[str, torch.Tensor]:
    """Sorted distinct non-zero values of every weight tensor (the shared values after clustering)."""
    out = {}
    for mname, m in model.named_modules():
        for p in _param_names(m, include_bias):
            w = getattr(m, p).detach().reshape(-1)
            out[f"{mname}.{p}" if mname else p] = torch.unique(w[w != 0])
    return out


def distinct_values(model: nn.Module, *, include_bias: bool = False) -> dict[str, int]:
    """Number of distinct non-zero values per weight tensor."""
    return {k: int(v.numel()) for k, v in codebooks(model, include_bias=include_bias).items()}
