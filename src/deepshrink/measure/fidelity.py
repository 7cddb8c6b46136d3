"""Accuracy and output fidelity: top-1, cosine, max abs error, agreement.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.measure.fidelity import compare_outputs
    >>> m = nn.Linear(4, 3)
    >>> f = compare_outputs(m, m, [torch.randn(5, 4)])
    >>> f.cosine > 0.9999, f.max_abs_err, f.agreement
    (True, 0.0, 1.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..inputs import flat_tensors, iter_inputs, iter_labelled


@torch.no_grad()
def top1_accuracy(model: nn.Module, data: Any, *, n_inputs: int = 1) -> float:
    """Top-1 accuracy over `(*inputs, target)` batches, as a fraction in [0, 1].

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Identity()
        >>> top1_accuracy(m, [(torch.eye(3), torch.tensor([0, 1, 2]))])
        1.0
    """
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for inputs, target in iter_labelled(data, n_inputs):
            out = flat_tensors(model(*inputs))
            if not out:
                raise InputError("model output holds no tensor")
            pred = out[0].reshape(target.shape[0], -1).argmax(dim=1)
            correct += int((pred == target).sum())
            total += int(target.shape[0])
    finally:
        model.train(was_training)
    if total == 0:
        raise InputError("accuracy data is empty")
    return correct / total


@dataclass
class Fidelity:
    """How closely a candidate's outputs follow a reference's, over all outputs and batches.

    cosine: mean per-sample cosine similarity of the flattened first output;
    max_abs_err / mean_abs_err: over every output element;
    agreement: fraction of samples whose argmax of the first output agrees (classification).
    """

    cosine: float
    max_abs_err: float
    mean_abs_err: float
    agreement: float
    samples: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@torch.no_grad()
def compare_outputs(
    reference: nn.Module, candidate: nn.Module, data: Any, *, n_inputs: int | None = None, limit: int | None = None
) -> Fidelity:
    """Fidelity of `candidate` to `reference` on the input batches of `data`.

    Args:
        reference, candidate: models taking the same inputs.
        data: iterable of batches (labels after the first `n_inputs` items are ignored) or a tensor.
        n_inputs: how many leading items of each batch are model inputs (default: all but a trailing
            integer label tensor, if any).
        limit: use at most this many batches.
    """
    cos_sum = 0.0
    agree = samples = 0
    max_err = 0.0
    abs_sum = 0.0
    elems = 0
    for batch in iter_inputs(data, None, limit=limit):
        if n_inputs is not None:
            inputs = batch[:n_inputs]
        elif len(batch) > 1 and isinstance(batch[-1], torch.Tensor) and not batch[-1].is_floating_point():
            inputs = batch[:-1]
        else:
            inputs = batch
        ref = flat_tensors(reference(*inputs))
        cand = flat_tensors(candidate(*inputs))
        if len(ref) != len(cand):
            raise InputError(f"reference gives {len(ref)} outputs, candidate {len(cand)}")
        for r, c in zip(ref, cand, strict=False):
            if r.shape != c.shape:
                raise InputError(f"output shapes differ: {tuple(r.shape)} vs {tuple(c.shape)}")
            d = (r.float() - c.float()).abs()
            if d.numel():
                max_err = max(max_err, float(d.max()))
                abs_sum += float(d.sum())
                elems += d.numel()
        r0, c0 = ref[0].float(), cand[0].float()
        n = r0.shape[0] if r0.dim() > 0 else 1
        r2, c2 = r0.reshape(n, -1), c0.reshape(n, -1)
        cos_sum += float(nn.functional.cosine_similarity(r2, c2, dim=1, eps=1e-12).sum())
        agree += int((r2.argmax(1) == c2.argmax(1)).sum())
        samples += n
    if samples == 0:
        raise InputError("fidelity data is empty")
    return Fidelity(
        cosine=cos_sum / samples,
        max_abs_err=max_err,
        mean_abs_err=abs_sum / max(elems, 1),
        agreement=agree / samples,
        samples=samples,
    )
