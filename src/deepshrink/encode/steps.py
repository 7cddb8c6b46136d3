"""Recipe steps of this capability (registered with `deepshrink.recipe.register_step`).

``encode``: store the model as .dsz bytes (``ctx.artifact``), check that decoding them reproduces
the outputs bit for bit, and continue with the *decoded* model, so that every later measurement is
of the real artifact.

Example:
    >>> from deepshrink.recipe import Recipe
    >>> Recipe.from_list([{"type": "encode", "coder": "ans"}]).steps[0].coder
    'ans'
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import RecipeError, VerificationError
from ..recipe import StepContext, register_step


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _tensors(v)]
    if hasattr(out, "to_tuple"):  # transformers ModelOutput
        return _tensors(out.to_tuple())
    return []


def same_outputs(a: nn.Module, b: nn.Module, inputs: tuple) -> bool:
    """Whether `a` and `b` give bit-identical outputs on `inputs` (both run in eval mode)."""
    from ..inputs import run_forward

    modes = (a.training, b.training)
    a.eval()
    b.eval()
    try:
        ra = _tensors(run_forward(a, inputs, what="model before encoding"))
        rb = _tensors(run_forward(b, inputs, what="decoded model"))
    finally:
        a.train(modes[0])
        b.train(modes[1])
    return len(ra) == len(rb) and all(
        x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(ra, rb, strict=True)
    )


@register_step("encode")
@dataclass(frozen=True)
class Encode:
    """Encode to .dsz (sparse relative indices, codebooks, entropy coding) and continue with the decoded model.

    Row extras: ``dsz_bytes``, ``fp32_bytes``, ``bits_per_weight``, ``coded_bits``,
    ``entropy_bits`` and ``coding_overhead`` (coded index/value streams vs their empirical entropy),
    ``encodings`` (tensor count per encoding) and, with ``stage_sizes``, ``stage_bytes`` = the
    paper's stages as real .dsz sizes: ``pruned`` (sparse relative indices, raw values, no entropy
    coding), ``quantized`` (+ codebooks, fixed-width indices) and ``coded`` (+ entropy coding).
    """

    coder: str = "auto"  # "auto" (smallest per stream) | "ans" | "huffman" | "none" (fixed width)
    verify: bool = True  # decode and compare outputs bit-exactly on ctx.example_inputs
    stage_sizes: bool = True  # also measure the size without entropy coding (one more encode)

    def __post_init__(self):
        if self.coder not in ("auto", "ans", "huffman", "none"):
            raise RecipeError(f"encode: coder must be auto, ans, huffman or none, got {self.coder!r}")

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from .api import dumps, loads, stats

        data = dumps(model, coder=self.coder)
        st = stats(data)
        skeleton = None
        if _needs_skeleton(data):
            skeleton = copy.deepcopy(model)
        decoded = loads(data, model=skeleton)
        if self.verify and not same_outputs(model, decoded, tuple(ctx.example_inputs)):
            raise VerificationError("encode: the decoded .dsz model does not reproduce the outputs bit-exactly")
        ctx.artifact = data
        ctx.artifact_suffix = ".dsz"
        counts: dict[str, int] = {}
        for t in st.tensors:
            counts[t.encoding] = counts.get(t.encoding, 0) + 1
        ctx.row_extras.update(
            dsz_bytes=len(data),
            fp32_bytes=st.fp32_bytes,
            bits_per_weight=st.bits_per_weight,
            coded_bits=st.coded_bits,
            entropy_bits=st.entropy_bits,
            coding_overhead=st.coding_overhead,
            encodings=counts,
            rebuildable=skeleton is None,
        )
        if self.stage_sizes:
            ctx.row_extras["stage_bytes"] = {
                "pruned": len(dumps(model, coder="none", codebooks=False)),
                "quantized": len(dumps(model, coder="none")),
                "coded": len(data),
            }
        return decoded


def _needs_skeleton(data: bytes) -> bool:
    from .container import Reader

    return Reader(data).header.get("architecture") is None
