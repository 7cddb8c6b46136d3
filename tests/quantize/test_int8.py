"""int8 post-training quantization: real kernels, accuracy, calibration, passes, errors."""

from __future__ import annotations

import copy
import operator

import pytest
import torch
from torch import nn

import deepshrink.quantize as Q
from deepshrink.errors import BackendUnavailableError, CalibrationError, InputError
from deepshrink.quantize.int8 import graph as G
from deepshrink.quantize.int8.observers import CalibrationObserver, clip_range
from deepshrink.quantize.int8.torch_backend import DynamicLinear, is_quantized_module
from tests.models import MLP, SmallCNN

# fast, deterministic settings: no timing-based decisions in tests
FAST = dict(engine="fbgemm", fallback_slow=False, equalize=False, bias_correction=False, align_channels=False)


@pytest.fixture(scope="module")
def lenet5():
    from deepshrink.tasks.mnist import mnist_task

    return mnist_task("lenet5")


def _acc(model, task):
    from deepshrink.measure import top1_accuracy

    with torch.no_grad():
        return top1_accuracy(model, task.eval_data)


def _cnn_calib(n=4, bs=8):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(bs, 3, 16, 16, generator=g) for _ in range(n)]


def _trained_bn_cnn():
    torch.manual_seed(0)
    m = SmallCNN()
    m.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for x in _cnn_calib(6):
            m(x * 2 + 0.5)
        for bn in (m.bn1, m.bn2):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return m.eval()


def test_static_x86_runs_int8_kernels_and_keeps_accuracy(lenet5):
    before = copy.deepcopy(lenet5.model.state_dict())
    q = Q.int8(lenet5.model, lenet5.example_inputs, lenet5.calib_data, **FAST)
    kinds = {type(m).__name__ for m in q.modules() if is_quantized_module(m)}
    assert {"QuantizedConv2d", "QuantizedLinear"} <= {f"Quantized{k}" for k in kinds} | kinds
    assert any(isinstance(m, torch.ao.nn.quantized.Conv2d) for m in q.modules())
    # the input model is untouched
    after = lenet5.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    fp32, int8 = _acc(lenet5.model, lenet5), _acc(q, lenet5)
    assert int8 >= fp32 - 0.003
    assert q.quant_info.mode == "static" and q.quant_info.cosine > 0.999
    assert q(torch.rand(7, 1, 28, 28)).shape == (7, 10)  # any batch size


def test_dynamic_quantizes_linears_and_records_conv_fallback(lenet5):
    q = Q.int8(lenet5.model, lenet5.example_inputs, **FAST)
    info = q.quant_info
    assert info.mode == "dynamic"
    assert any(isinstance(m, (DynamicLinear, torch.ao.nn.quantized.dynamic.Linear)) for m in q.modules())
    reasons = {r["layer"]: r["reason"] for r in info.fallback}
    assert "1" in reasons and "dynamic" in reasons["1"]
    assert _acc(q, lenet5) >= _acc(lenet5.model, lenet5) - 0.003


def test_onnxruntime_static_qdq(lenet5):
    pytest.importorskip("onnxruntime")
    q = Q.int8(lenet5.model, lenet5.example_inputs, lenet5.calib_data, backend="onnxruntime", **FAST)
    from deepshrink.quantize.int8.ort_backend import OrtModule, ort_quantized_ops

    assert isinstance(q, OrtModule)
    assert "QuantizeLinear" in ort_quantized_ops(q)
    assert _acc(q, lenet5) >= _acc(lenet5.model, lenet5) - 0.003
    assert q(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    q2 = copy.deepcopy(q)  # deep copies / pickles without the session
    assert torch.allclose(q2(torch.ones(2, 1, 28, 28)), q(torch.ones(2, 1, 28, 28)))


def test_onnxruntime_dynamic():
    pytest.importorskip("onnxruntime")
    m = MLP().eval()
    q = Q.int8(m, MLP.example_inputs(), backend="onnxruntime", **FAST)
    from deepshrink.quantize.int8.ort_backend import ort_quantized_ops

    assert {"DynamicQuantizeLinear", "MatMulInteger"} & set(ort_quantized_ops(q))
    x = torch.randn(9, 16)
    assert torch.nn.functional.cosine_similarity(q(x), m(x)).mean() > 0.99


@pytest.mark.parametrize("method", ["minmax", "percentile", "mse", "entropy"])
def test_each_calibration_method(method):
    m = _trained_bn_cnn()
    q = Q.int8(m, SmallCNN.example_inputs(), _cnn_calib(), calibration=method, fallback=False, **FAST)
    assert q.quant_info.calibration == method
    assert any(isinstance(x, torch.ao.nn.quantized.Linear) for x in q.modules())
    assert q.quant_info.cosine > 0.98


def test_observer_ranges():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(50_000, generator=g), torch.tensor([40.0])])  # one outlier
    lo, hi = float(x.min()), float(x.max())
    assert clip_range(x, lo, hi, "minmax") == (lo, hi)
    p_lo, p_hi = clip_range(x, lo, hi, "percentile", percentile=99.9)
    assert 2.5 < p_hi < 4.5 and p_lo < 0
    m_lo, m_hi = clip_range(x, lo, hi, "mse")
    assert m_hi < hi and m_lo >= lo
    e_lo, e_hi = clip_range(x, lo, hi, "entropy", levels=256)
    assert e_hi < hi / 2
    relu = x.clamp(min=0)
    assert clip_range(relu, 0.0, float(relu.max()), "entropy")[0] == 0.0
    obs = CalibrationObserver(method="percentile", percentile=99.9)
    obs(x)
    scale, _ = obs.calculate_qparams()
    assert float(scale) < (hi - lo) / 255 / 3


def test_batchnorm_folding_is_exact():
    m = _trained_bn_cnn()
    g = G.fold_batchnorm(G.trace(m))
    assert not any(isinstance(x, nn.BatchNorm2d) for x in g.modules())
    x = torch.randn(4, 3, 16, 16)
    assert torch.allclose(g(x), m(x), atol=1e-5)


def test_equalization_and_affine_folding_are_exact(lenet5):
    gm = G.trace(lenet5.model)
    x = torch.rand(4, 1, 28, 28)
    ref = lenet5.model(x)
    assert G.fold_input_affine(gm) == 2  # the Normalize layer's sub and div
    assert G.equalize(gm) == 3
    assert torch.allclose(gm(x), ref, atol=1e-4)
    a, b = gm.get_submodule("1"), gm.get_submodule("3")
    r1 = a.weight.reshape(20, -1).abs().amax(1)
    r2 = b.weight.transpose(0, 1).reshape(20, -1).abs().amax(1)
    assert torch.allclose(r1, r2, rtol=0.15)  # per-channel ranges (nearly) matched


def test_affine_folds_through_flatten_exactly():
    """LeNet-300-100: Normalize -> Flatten -> Linear; the sub/div fold into the Linear, the flatten stays."""
    from deepshrink.tasks.models import LeNet300

    torch.manual_seed(0)
    model = LeNet300().eval()
    gm = G.view_to_reshape(G.trace(model))
    x = torch.rand(4, 1, 28, 28)
    assert G.fold_input_affine(gm) == 2
    assert not any(n.target in (operator.sub, operator.truediv) for n in gm.graph.nodes)
    assert any(n.target is torch.flatten for n in gm.graph.nodes)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-4, atol=1e-5)


def test_bias_correction_reduces_mean_shift():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 32)).eval()
    with torch.no_grad():
        m[0].weight.mul_(3)
    data = [(torch.randn(64, 64) + 1.0,)]
    gm = G.trace(m)
    fq = copy.deepcopy(gm)
    fq.get_submodule("0").weight.data = G.fake_quant_weight(fq.get_submodule("0").weight, per_channel=False)
    shift_before = (fq(*data[0]) - gm(*data[0])).mean(0).abs().mean()
    corrected = copy.deepcopy(gm)
    assert G.bias_correct(corrected, data, ["0"], per_channel=False) == 1
    corrected.get_submodule("0").weight.data = G.fake_quant_weight(corrected.get_submodule("0").weight, False)
    shift_after = (corrected(*data[0]) - gm(*data[0])).mean(0).abs().mean()
    assert shift_after < shift_before / 10


def test_view_is_rewritten_for_channels_last_int8():
    class ViewNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 3)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return self.fc(y.view(y.size(0), -1))

    m = ViewNet().eval()
    q = Q.int8(m, torch.randn(1, 1, 8, 8), [torch.randn(8, 1, 8, 8)], **FAST)
    assert q(torch.randn(3, 1, 8, 8)).shape == (3, 3)


def test_flatten_module_stays_on_quantized_tensors():
    """nn.Flatten becomes torch.flatten, which torch.ao runs on the int8 tensor (no dequantize/quantize pair)."""
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.randn(8, 1, 8, 8)
    q = Q.int8(m, x, [x], **FAST)
    code = q.code
    assert "torch.flatten" in code and code.count(".dequantize()") == 1  # only the output
    with torch.no_grad():
        assert torch.nn.functional.cosine_similarity(q(x), m(x)).mean() > 0.99


def test_sensitive_layers_fall_back():
    m = _trained_bn_cnn()
    q = Q.int8(m, SmallCNN.example_inputs(), _cnn_calib(), min_cosine=1.0, max_fallback=1, **FAST)
    rows = q.quant_info.fallback
    assert len([r for r in rows if r["reason"].startswith("sensitive")]) == 1
    assert "sensitivity" in q.quant_info.passes


def test_exclude_and_unsupported_layers_are_recorded():
    class WithNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.ln = nn.LayerNorm(8)
            self.fc1 = nn.Linear(8, 8)
            self.fc2 = nn.Linear(8, 2)

        def forward(self, ids):
            return self.fc2(self.fc1(self.ln(self.emb(ids))))

    m = WithNorm().eval()
    q = Q.int8(m, torch.randint(0, 10, (2, 5)), exclude=["fc2"], **FAST)
    reasons = {r["layer"]: r["reason"] for r in q.quant_info.fallback}
    assert reasons["fc2"] == "excluded by the caller"
    assert "emb" in reasons
    assert q.quant_info.quantized == ["fc1"]
    assert q(torch.randint(0, 10, (3, 7))).shape == (3, 7, 2)  # other batch and sequence length


def test_errors():
    m, ex = MLP().eval(), MLP.example_inputs()
    with pytest.raises(CalibrationError, match="empty"):
        Q.int8(m, ex, [], **FAST)
    with pytest.raises(CalibrationError, match="shape"):
        Q.int8(m, ex, [torch.randn(4, 15)], **FAST)
    with pytest.raises(InputError, match="backend"):
        Q.int8(m, ex, backend="tpu")
    with pytest.raises(InputError, match="calibration"):
        Q.int8(m, ex, [torch.randn(4, 16)], calibration="magic")
    with pytest.raises(InputError, match="mse"):
        Q.int8(m, ex, [torch.randn(4, 16)], backend="onnxruntime", calibration="mse", **FAST)


def test_backend_missing(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now fails
    with pytest.raises(BackendUnavailableError, match="onnxruntime"):
        Q.int8(MLP().eval(), MLP.example_inputs(), backend="onnxruntime")


def test_int8_auto_keeps_a_faithful_backend():
    pytest.importorskip("onnxruntime")
    m = MLP().eval()
    q = Q.int8_auto(m, MLP.example_inputs(), [torch.randn(16, 16)], engine="fbgemm", fallback_slow=False,
                    equalize=False, bias_correction=False, threads=1)
    assert q.quant_info.backend in ("x86", "onnxruntime")
    timing = [n for n in q.quant_info.notes if n.startswith("auto backend")]
    assert timing and "onnxruntime/dynamic" in timing[0]  # with calib_data, dynamic modes compete too
    assert q.quant_info.mode in ("static", "dynamic")
    assert q.quant_info.latency_ms["int8"] > 0 and q.quant_info.slower_than_fp32 in (True, False)


@pytest.mark.parametrize("trial_ms, kept", [(2.0, False), (0.5, True)])
def test_slow_layer_fallback_is_kept_only_if_the_model_gets_faster(monkeypatch, trial_ms, kept):
    """A layer slower alone in int8 stays int8 unless the whole model measures faster with it fp32."""
    import sys

    from deepshrink.quantize.int8 import api

    latency = sys.modules["deepshrink.measure.latency"]  # the module (the package exports a function of that name)
    monkeypatch.setattr(api, "slow_layers", lambda f, q, b: {"fc2": "int8 kernel slower than fp32 on its input"})
    monkeypatch.setattr(latency, "interleaved_medians", lambda calls, threads: {"current": 1.0, "trial": trial_ms})
    m = MLP().eval()
    calib = [torch.randn(16, 16) for _ in range(2)]
    q = Q.int8(m, calib[0], calib, **{**FAST, "fallback_slow": True})
    fallen = {r["layer"] for r in q.quant_info.fallback}
    assert ("fc2" in fallen) is kept and ("fc2" in q.quant_info.quantized) is not kept
    assert q.quant_info.passes["slow_fallback"]["fc2"].startswith("kept" if kept else "rejected")


def test_int8_auto_breaks_timing_ties_by_fidelity(monkeypatch):
    """Candidates within `speed_tolerance` of the fastest tie; the most faithful of them is kept."""
    from deepshrink.quantize.int8 import auto

    m = MLP().eval()
    calib = [torch.randn(16, 16) for _ in range(2)]
    kw = dict(backends=("x86",), engine="fbgemm", fallback_slow=False, equalize=False, bias_correction=False,
              threads=1, batch_size=4)

    example = MLP.example_inputs()  # fixed: dynamic mode measures its fidelity on the example inputs

    def chosen(times, tol):
        monkeypatch.setattr(auto, "interleaved_medians", lambda calls, threads: times)
        q = Q.int8_auto(m, example, calib, speed_tolerance=tol, **kw)
        return q, q.quant_info.notes[-1]

    q, note = chosen({"x86": 1.0, "x86/dynamic": 1.5}, 0.05)
    assert note.endswith("-> x86") and q.quant_info.mode == "static"
    q, note = chosen({"x86": 1.0, "x86/dynamic": 1.03}, 0.0)
    assert note.endswith("-> x86")
    q, note = chosen({"x86": 1.0, "x86/dynamic": 1.03}, 0.05)
    assert "most faithful of x86, x86/dynamic" in note
    static, _ = chosen({"x86": 1.0, "x86/dynamic": 9.0}, 0.0)
    dynamic, _ = chosen({"x86": 9.0, "x86/dynamic": 1.0}, 0.0)
    assert q.quant_info.cosine == max(static.quant_info.cosine, dynamic.quant_info.cosine)


def test_int8_auto_races_single_thread_onnxruntime():
    pytest.importorskip("onnxruntime")
    m = MLP().eval()
    q = Q.int8_auto(m, MLP.example_inputs(), [torch.randn(16, 16)], backends=("onnxruntime",), threads=2,
                    equalize=False, bias_correction=False)
    timing = [n for n in q.quant_info.notes if n.startswith("auto backend")][0]
    assert "onnxruntime/1thread" in timing and "onnxruntime/dynamic/1thread" in timing
    assert q.quant_info.backend == "onnxruntime" and q.max_threads in (None, 1)
