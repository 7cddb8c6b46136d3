"""Latency helpers: correctness of what is recorded, never asserting absolute speed."""

import torch
from torch import nn

from deepshrink.measure import compare_latency, latency


def test_latency_records_settings_and_restores_threads():
    before = torch.get_num_threads()
    r = latency(nn.Linear(32, 32), torch.zeros(4, 32), threads=1, warmup=2, repeats=7)
    assert r.threads == 1 and r.repeats == 7 and r.batch_size == 4
    assert 0 < r.min_ms <= r.median_ms <= r.p90_ms
    assert torch.get_num_threads() == before


def test_latency_rebatches_inputs():
    assert latency(nn.Linear(8, 8), torch.zeros(1, 8), batch_size=16, repeats=5).batch_size == 16


def test_compare_latency_of_a_model_with_itself_is_about_one():
    m = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256))
    r = compare_latency(m, m, torch.randn(16, 256), threads=1, warmup=5, repeats=60)
    # Same model, interleaved: the ratio of medians sits near 1 even on a busy machine.
    assert 0.6 < r.speedup < 1.6
    assert r.repeats == 60 and r.threads == 1


def test_compare_latency_keeps_training_mode():
    m = nn.Linear(4, 4).train()
    compare_latency(m, m, torch.zeros(1, 4), repeats=5)
    assert m.training


class _Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


def test_compare_latency_in_blocks_times_each_model_in_runs_of_calls():
    import pytest

    from deepshrink.errors import InputError

    a, b = _Counter(), _Counter()
    r = compare_latency(a, b, torch.zeros(1, 4), warmup=2, repeats=20, block=5)
    assert r.repeats == 20  # 4 turns of 5 timed calls each
    # 1 check run + 2 warm-up + 4 turns x (1 untimed + 5 timed)
    assert a.calls == b.calls == 1 + 2 + 4 * 6
    with pytest.raises(InputError, match="block"):
        compare_latency(a, b, torch.zeros(1, 4), repeats=5, block=0)
