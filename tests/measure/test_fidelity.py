import torch
from torch import nn

from deepshrink.measure.fidelity import compare_outputs, top1_accuracy


def test_top1_accuracy_counts_correct_rows():
    x = torch.eye(4)
    y = torch.tensor([0, 1, 2, 0])
    assert top1_accuracy(nn.Identity(), [(x, y)]) == 0.75


def test_compare_outputs_identical_and_perturbed():
    torch.manual_seed(0)
    m = nn.Linear(6, 3)
    data = [(torch.randn(10, 6), torch.zeros(10, dtype=torch.long))]
    same = compare_outputs(m, m, data)
    assert same.max_abs_err == 0.0 and same.agreement == 1.0 and same.samples == 10
    n = nn.Linear(6, 3)
    with torch.no_grad():
        n.weight.copy_(m.weight)
        n.bias.copy_(m.bias + 0.5)
    f = compare_outputs(m, n, data)
    assert abs(f.max_abs_err - 0.5) < 1e-5
    assert f.cosine < 1.0
