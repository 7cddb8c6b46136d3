"""`int8_auto`: build the int8 model on every backend and keep the fastest that is faithful enough.

Backends tried by default: "x86" (torch.ao), "onnxruntime" (QDQ) and "x86_inductor" (torchao PT2E +
inductor; skipped with a note when torchao is missing or the model does not export).

Example:
    >>> import torch
    >>> from torch import nn
    >>> q = int8_auto(nn.Sequential(nn.Linear(8, 8)), torch.randn(2, 8), fallback_slow=False)
    >>> q.quant_info.backend in ("x86", "onnxruntime", "x86_inductor")
    True
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ...errors import BackendUnavailableError
from ...inputs import as_inputs, iter_inputs
from ...measure.latency import interleaved_medians
from .api import BACKENDS, int8

# Backends whose dynamic mode (activations quantized on the fly) can beat their static one: on
# small fully connected models onnxruntime's MatMulInteger path is the fastest int8 of all.
DYNAMIC_BACKENDS = ("x86", "onnxruntime")


def int8_auto(model: nn.Module, example_inputs: Any, calib_data: Any = None, *,
              backends: Sequence[str] = BACKENDS, batch_size: int | None = None, threads: int | None = None,
              try_dynamic: bool = True, speed_tolerance: float = 0.05, **kwargs: Any) -> nn.Module:
    """`int8` on every backend in `backends`; returns the fastest whose output cosine meets `min_cosine`
    (of those within `speed_tolerance` of the fastest, the one with the highest output cosine).

    With `calib_data`, each backend is built static (calibrated activations) and, when
    `try_dynamic` and the backend supports it, also dynamic; candidates are named
    ``"<backend>"`` and ``"<backend>/dynamic"`` in the timing note.

    Timing uses `threads` intra-op threads (default: torch's current setting, i.e. how the model
    will run): the median of calls interleaved across all candidates in rounds (the typical
    latency; a minimum favours paths that are fast only at their best), at the first calibration
    batch (or the example inputs resized to `batch_size`). A backend that fails is recorded in
    the chosen model's `quant_info.notes`. A candidate counts as matching when its output cosine to
    fp32 (on the fidelity batches) meets `min_cosine`. Candidates within `speed_tolerance` of the
    fastest are a tie at this timing's resolution; the most faithful of them is kept.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> q = int8_auto(nn.Sequential(nn.Linear(8, 8)), torch.randn(2, 8), fallback_slow=False,
        ...               backends=("x86", "onnxruntime"))
        >>> q.quant_info.backend in ("x86", "onnxruntime")
        True
    """
    from ...inputs import rebatch

    inputs = as_inputs(example_inputs)
    min_cos = kwargs.get("min_cosine", 0.99)
    built, notes = {}, []
    candidates = [(be, be, calib_data, {}) for be in backends]
    if calib_data is not None and try_dynamic:
        # fidelity on the calibration batches, like the static candidates, so cosines compare
        same_fidelity = {} if "fidelity_data" in kwargs else {"fidelity_data": calib_data}
        candidates += [(f"{be}/dynamic", be, None, same_fidelity) for be in backends if be in DYNAMIC_BACKENDS]
    if calib_data is not None and "onnxruntime" in backends and "per_channel" not in kwargs:
        # onnxruntime's own default: per-tensor weight scales fuse into fewer, larger int8 GEMM
        # calls on some small models; it races the per-channel default.
        candidates.append(("onnxruntime/per_tensor", "onnxruntime", calib_data, {"per_channel": False}))
    for key, be, data, extra in candidates:
        try:
            built[key] = int8(model, inputs, data, backend=be, **kwargs, **extra)
        except Exception as exc:  # noqa: BLE001 - a failing backend is reported, the other used
            notes.append(f"backend {key} failed: {type(exc).__name__}: {exc}")
    if not built:
        raise BackendUnavailableError("no int8 backend could quantize the model: " + "; ".join(notes))
    if calib_data is not None:
        batch = next(iter(iter_inputs(calib_data, None, limit=1)))[: len(inputs)]
    else:
        batch = inputs
    if batch_size is not None:
        batch = rebatch(batch, batch_size)
    n_threads = threads or torch.get_num_threads()
    if n_threads > 1:
        # on tiny models one onnxruntime thread can beat two (no fork/join per op): race that too
        for key in [k for k, q in built.items() if hasattr(q, "with_threads")]:
            single = built[key].with_threads(1)
            single.quant_info = copy.deepcopy(built[key].quant_info)
            built[f"{key}/1thread"] = single
    times = interleaved_medians({be: (lambda _q=q: _q(*batch)) for be, q in built.items()}, n_threads)
    good = [be for be in built if (built[be].quant_info.cosine or 0) >= min_cos] or list(built)
    fastest = min(times[be] for be in good)
    # candidates within `speed_tolerance` of the fastest are a tie at this timing's resolution:
    # among them keep the most faithful (e.g. per-batch dynamic scales over per-tensor weights)
    near = [be for be in good if times[be] <= fastest * (1.0 + speed_tolerance)]
    best = max(near, key=lambda be: (built[be].quant_info.cosine or 0.0, -times[be]))
    chosen = built[best]
    chosen.quant_info.notes += notes + [
        f"auto backend ({n_threads} threads): " + ", ".join(f"{be} {t:.3f} ms" for be, t in times.items())
        + f" -> {best}"
        + (f" (most faithful of {', '.join(near)}, within {speed_tolerance:.0%})" if len(near) > 1 else "")]
    return chosen

