"""Quantization-aware training: STE, learned scales, BN-fold awareness, conversion to int8."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink.quantize.qat import QATLayer, convert, lsq_quant, prepare, qat, strip
from tests.models import SmallCNN


def test_ste_and_learned_step_gradients():
    x = torch.tensor([-3.0, -0.26, 0.3, 0.74, 5.0], requires_grad=True)
    step = torch.tensor(0.5, requires_grad=True)
    y = lsq_quant(x, step, -2, 1)  # levels -1.0 .. 0.5
    assert torch.allclose(y, torch.tensor([-1.0, -0.5, 0.5, 0.5, 0.5]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0]))  # straight through inside the range only
    assert step.grad is not None and step.grad.abs() > 0


def test_prepare_folds_bn_and_wraps_layers():
    torch.manual_seed(0)
    m = SmallCNN()
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(8, 3, 16, 16))
    m.eval()
    p = prepare(m, SmallCNN.example_inputs(), [torch.randn(8, 3, 16, 16)])
    assert not any(isinstance(x, nn.BatchNorm2d) for x in p.modules())
    layers = [x for x in p.modules() if isinstance(x, QATLayer)]
    assert len(layers) == 3
    x = torch.randn(4, 3, 16, 16)
    for q in layers:
        q.enabled = False
    assert torch.allclose(p(x), m(x), atol=1e-4)  # BN folding is exact, fake quant off
    for q in layers:
        q.enabled = True
    assert torch.nn.functional.cosine_similarity(p(x), m(x)).mean() > 0.98
    s = strip(p)
    assert torch.equal(s.get_submodule("fc").weight, p.get_submodule("fc").fake_weight())  # snapped weights
    assert torch.allclose(s(x), p(x), atol=2e-2)  # differs only by activation fake-quant


@pytest.mark.slow
def test_qat_lenet5_converts_to_int8_within_accuracy():
    from deepshrink.measure import top1_accuracy
    from deepshrink.tasks.mnist import mnist_task

    task = mnist_task("lenet5")
    fp32 = top1_accuracy(task.model, task.eval_data)
    p = prepare(task.model, task.example_inputs, task.calib_data)
    from deepshrink.distill.loop import fit

    fit(p, task.train_data, epochs=0.25, lr=1e-4)
    q = convert(p, task.example_inputs, task.calib_data, engine="fbgemm", fallback_slow=False)
    assert any(isinstance(x, torch.ao.nn.quantized.Conv2d) for x in q.modules())
    with torch.no_grad():
        assert top1_accuracy(q, task.eval_data) >= fp32 - 0.003


def test_qat_convenience():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    data = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(2)]
    q = qat(m, torch.randn(1, 4), data, [torch.randn(16, 4)], epochs=1, engine="fbgemm", fallback_slow=False)
    assert q(torch.randn(5, 4)).shape == (5, 3)


def test_convert_uses_learned_scales():
    """The int8 model carries the learned LSQ steps and matches the fake-quant model closer than re-derived scales."""
    from deepshrink.quantize.qat import learned_qparams

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3),
                      nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 10))
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(8, 3, 16, 16))
    m.eval()
    calib = [torch.randn(16, 3, 16, 16) for _ in range(4)]
    p = prepare(m, torch.randn(1, 3, 16, 16), calib)
    with torch.no_grad():  # move the steps off their initial fit, as training does
        for layer in p.modules():
            if isinstance(layer, QATLayer):
                layer.a_step.mul_(0.8)
                layer.w_step.mul_(1.3)
    p.eval()
    kw = dict(engine="fbgemm", fallback_slow=False, check_speed=False, fallback=False)
    learned = convert(p, torch.randn(1, 3, 16, 16), calib, **kw)
    rederived = convert(p, torch.randn(1, 3, 16, 16), calib, learned_scales=False, **kw)
    qp = learned_qparams(p)
    for name, mod in learned.named_modules():
        if name in qp:
            assert torch.allclose(mod.weight().q_per_channel_scales().float(), qp[name]["weight_scale"], rtol=1e-6)
            # the int8 weights are exactly the fake-quant integers
            fake = p.get_submodule(name).fake_weight()
            assert torch.allclose(mod.weight().dequantize(), fake, atol=1e-6)
    # the first layer's input quantization is the learned (signed -> zero point 128) grid
    assert float(getattr(learned, "0_input_scale_0")) == pytest.approx(qp["0"]["act_scale"], rel=1e-6)
    assert int(getattr(learned, "0_input_zero_point_0")) == qp["0"]["act_zero_point"] == 128
    x = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = p(x)
        err_learned = float((learned(x) - ref).norm() / ref.norm())
        err_rederived = float((rederived(x) - ref).norm() / ref.norm())
    assert err_learned < 0.02
    assert err_learned < 0.5 * err_rederived


def test_convert_learned_scales_needs_x86():
    from deepshrink.errors import InputError

    p = prepare(nn.Sequential(nn.Linear(4, 2)), torch.randn(1, 4), [torch.randn(8, 4)])
    with pytest.raises(InputError, match="learned_scales"):
        convert(p, torch.randn(1, 4), [torch.randn(8, 4)], learned_scales=True, backend="onnxruntime")
