"""The `x86_inductor` int8 backend (torchao PT2E + X86InductorQuantizer, lowered by torch.compile)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

pytest.importorskip("torchao")

from deepshrink.errors import InputError  # noqa: E402
from deepshrink.quantize.int8 import int8  # noqa: E402
from deepshrink.quantize.int8.inductor_backend import InductorInt8Module, quantize_inductor  # noqa: E402


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).mean())


def test_x86_inductor_static_compiles_and_matches_fp32():
    m = _cnn()
    calib = [(torch.rand(16, 1, 14, 14),) for _ in range(4)]
    q = int8(m, torch.rand(1, 1, 14, 14), calib, backend="x86_inductor", check_speed=False, equalize=False,
             bias_correction=False)
    assert isinstance(q, InductorInt8Module) and q.compiled
    info = q.quant_info
    assert info.backend == "x86_inductor" and info.mode == "static"
    assert set(info.quantized) == {"0", "3", "6", "8"} and not info.fallback
    assert info.cosine > 0.99
    x = torch.rand(5, 1, 14, 14)  # another batch size: a new static specialisation
    with torch.no_grad():
        y, ref = q(x), m(x)
    assert y.shape == (5, 10) and _cos(y, ref) > 0.99
    # the eager (uncompiled) converted graph has the same numerics up to rounding
    eager = copy.deepcopy(q)
    eager.compiled = False
    with torch.no_grad():
        assert torch.allclose(eager(x), y, atol=0.05 * float(ref.abs().max()))


def test_x86_inductor_exclude_and_dynamic_probe():
    m = _cnn()
    calib = [(torch.rand(8, 1, 14, 14),)]
    q = quantize_inductor(m, (torch.rand(1, 1, 14, 14),), calib, exclude={"8"}, compiled=False)
    ops = [str(n.target) for n in q.graph_module.graph.nodes if n.op == "call_function"]
    assert any("quantize_per" in o for o in ops)
    with torch.no_grad():
        assert _cos(q(calib[0][0]), m(calib[0][0])) > 0.99
    dyn = quantize_inductor(nn.Sequential(nn.Linear(8, 4)).eval(), (torch.randn(2, 8),), None, exclude=set(),
                            compiled=False)
    assert dyn(torch.randn(3, 8)).shape == (3, 4)


def test_x86_inductor_rejects_unsupported_calibration():
    with pytest.raises(InputError, match="x86_inductor"):
        int8(_cnn(), torch.rand(1, 1, 14, 14), [torch.rand(4, 1, 14, 14)], backend="x86_inductor",
             calibration="entropy")
