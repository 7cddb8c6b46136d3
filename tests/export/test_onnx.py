"""ONNX export verified in onnxruntime, torch.export programs, runtime choice."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deepshrink.export as ex
import deepshrink.quantize as Q
from deepshrink.errors import UnsupportedLayerError, VerificationError
from tests.models import MLP, SmallCNN

pytest.importorskip("onnxruntime")


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 8)
        self.a = nn.Linear(8, 3)
        self.b = nn.Linear(8, 2)

    def forward(self, x):
        h = torch.relu(self.body(x))
        return self.a(h), self.b(h)


def test_fp32_export_verifies_with_dynamic_batch(tmp_path):
    m = SmallCNN().eval()
    path = ex.onnx(m, SmallCNN.example_inputs(), tmp_path / "cnn.onnx")
    assert path.is_file() and path.stat().st_size > 1000
    from deepshrink.export.onnx_io import make_session

    sess = make_session(path.read_bytes())
    out = sess.run(None, {"input_0": torch.randn(5, 3, 16, 16).numpy()})[0]
    assert out.shape == (5, 10)
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporaries


def test_mismatch_lists_every_output(tmp_path):
    m = TwoHeads().eval()
    x = (torch.randn(2, 6),)
    data, ins, outs = ex.onnx_bytes(m, x)
    other = TwoHeads().eval()  # different weights: both outputs differ
    with pytest.raises(VerificationError) as err:
        ex.verify_onnx(other, data, ins, outs, x)
    msg = str(err.value)
    assert "output_0" in msg and "output_1" in msg
    assert msg.count("values differ") == 4  # both outputs at both batch sizes


def test_failed_verification_writes_nothing(tmp_path, monkeypatch):
    import deepshrink.export.onnx_io as io

    def broken(model, example_inputs, **kw):
        data, ins, outs = real(model, example_inputs, **kw)
        return real(TwoHeads().eval(), example_inputs, **kw)[0], ins, outs

    real = io.onnx_bytes
    monkeypatch.setattr(io, "onnx_bytes", broken)
    with pytest.raises(VerificationError):
        io.onnx(TwoHeads().eval(), torch.randn(2, 6), tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_quantized_exports():
    m, x = MLP().eval(), MLP.example_inputs()
    q_torch = Q.int8(m, x, [torch.randn(8, 16)], engine="fbgemm", fallback_slow=False,
                     equalize=False, bias_correction=False)
    with pytest.raises(UnsupportedLayerError, match="onnxruntime"):
        ex.onnx_bytes(q_torch, x)
    q_ort = Q.int8(m, x, [torch.randn(8, 16)], backend="onnxruntime", fallback_slow=False)
    data, _, _ = ex.onnx_bytes(q_ort, x)
    assert data == q_ort.onnx_model_bytes


def test_quantized_onnx_file(tmp_path):
    m, x = MLP().eval(), MLP.example_inputs()
    q = Q.int8(m, x, [torch.randn(8, 16)], backend="onnxruntime", fallback_slow=False)
    p = ex.onnx(q, x, tmp_path / "q.onnx")
    import onnx

    ops = {n.op_type for n in onnx.load(str(p)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops


def test_program_dynamic_batch(tmp_path):
    m = SmallCNN().eval()
    ep = ex.program(m, SmallCNN.example_inputs(), tmp_path / "cnn.pt2")
    assert (tmp_path / "cnn.pt2").is_file()
    x = torch.randn(5, 3, 16, 16)
    assert torch.allclose(ep.module()(x), m(x), atol=1e-5)
    loaded = torch.export.load(str(tmp_path / "cnn.pt2"))
    assert torch.allclose(loaded.module()(x), m(x), atol=1e-5)


def test_runtime_choice_reports_each_runtime():
    m = MLP().eval()
    rep = ex.compare_runtimes(m, MLP.example_inputs(), runtimes=("eager", "onnxruntime"), repeats=5)
    rows = {r.runtime: r for r in rep.rows}
    assert rows["eager"].matches and rows["onnxruntime"].matches
    assert rep.best in rows
    q = Q.int8(m, MLP.example_inputs(), [torch.randn(8, 16)], engine="fbgemm", fallback_slow=False)
    rep = ex.compare_runtimes(q, MLP.example_inputs(), runtimes=("eager", "onnxruntime"), repeats=3)
    assert rep.row("onnxruntime").error and rep.best == "eager"


def test_half_precision_roundtrip():
    m = SmallCNN().eval()
    x = SmallCNN.example_inputs()[0]
    for conv in (Q.fp16, Q.bf16):
        h = conv(m)
        y = h(x)
        assert y.dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(y, m(x)).min() > 0.99
    assert next(m.parameters()).dtype == torch.float32  # input untouched


def test_ort_module_spins_by_default_and_can_be_told_not_to():
    from deepshrink.quantize.int8.ort_backend import OrtModule

    m = TwoHeads().eval()
    x = (torch.randn(2, 6),)
    data, ins, outs = ex.onnx_bytes(m, x)
    mod = OrtModule(data, ins, outs, single_output=False)

    def spinning():
        return mod.session().get_session_options().get_session_config_entry("session.intra_op.allow_spinning")

    assert spinning() == "1"  # onnxruntime's default: fastest for small models
    mod.spin = False
    assert spinning() == "0"  # a new session, for processes where other threads need the cores
    torch.testing.assert_close(mod(*x)[0], m(*x)[0], rtol=1e-4, atol=1e-5)


def test_ort_module_thread_cap():
    """`with_threads(1)` shares the model bytes and runs one intra-op thread whatever torch's setting."""
    from deepshrink.measure import pinned_threads
    from deepshrink.quantize.int8.ort_backend import OrtModule

    m = TwoHeads().eval()
    x = (torch.randn(2, 6),)
    data, ins, outs = ex.onnx_bytes(m, x)
    mod = OrtModule(data, ins, outs, single_output=False)
    one = mod.with_threads(1)
    assert one.onnx_model_bytes is mod.onnx_model_bytes and one.max_threads == 1
    with pinned_threads(2):
        assert mod.session().get_session_options().intra_op_num_threads == 2
        assert one.session().get_session_options().intra_op_num_threads == 1
        torch.testing.assert_close(one(*x)[0], mod(*x)[0])
