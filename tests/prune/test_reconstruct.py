"""Reconstruction pruning on a small randomly-initialised BertModel (no download)."""

from __future__ import annotations

import pytest
import torch

import deepshrink.prune as P
from deepshrink.prune.structured.reconstruct import collect_input_stats, token_mask

transformers = pytest.importorskip("transformers")


def _bert(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    return transformers.BertModel(cfg, add_pooling_layer=False).eval()


class _Hidden(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, ids, mask):
        return self.bert(input_ids=ids, attention_mask=mask).last_hidden_state


def _batches(n, seed, bs=16, seq=12):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, 200, (bs, seq), generator=g)
        lens = torch.randint(seq // 2, seq + 1, (bs,), generator=g)
        mask = (torch.arange(seq)[None, :] < lens[:, None]).long()
        out.append((ids * mask, mask))
    return out


def _err(model, small, data):
    num = den = 0.0
    with torch.no_grad():
        for ids, mask in data:
            m = mask.bool()
            ref, out = model(ids, mask)[m], small(ids, mask)[m]
            num += float((out - ref).pow(2).sum())
            den += float((ref - ref.mean(0)).pow(2).sum())
    return num / den


def test_token_mask_found_only_for_padding_masks():
    ids = torch.randint(0, 9, (2, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(token_mask((ids, mask)), mask.bool())
    assert token_mask((ids, torch.ones_like(mask))) is None
    assert token_mask((ids,)) is None
    assert token_mask((torch.randn(2, 5, 3), torch.randn(2, 5))) is None


def test_statistics_ignore_padding_tokens():
    model = _Hidden(_bert())
    padded = _batches(1, seed=3, bs=6)
    ids, mask = padded[0]
    ids = ids + (1 - mask) * 7  # garbage in the padding positions must not matter
    single = [(ids[i:i + 1, : int(mask[i].sum())], mask[i:i + 1, : int(mask[i].sum())]) for i in range(len(ids))]
    mods = ["bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.attention.output.dense"]
    a = collect_input_stats(model, mods, [(ids, mask)], 2)
    b = collect_input_stats(model, mods, single, 2)
    for name in mods:
        torch.testing.assert_close(a[name]["A"], b[name]["A"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a[name]["mean"], b[name]["mean"], rtol=1e-4, atol=1e-5)


def test_reconstruction_beats_magnitude_on_bert():
    model = _Hidden(_bert())
    calib, test = _batches(6, seed=1), _batches(3, seed=2)
    small = P.channels(model, calib[0], 0.3, kinds=["heads", "channels"])
    err = {"l2": _err(model, small, test)}
    for scope in ("uniform", "global"):
        small = P.channels(model, calib[0], 0.3, importance="reconstruction", scope=scope,
                           kinds=["heads", "channels"], calib_data=calib)
        err[scope] = _err(model, small, test)
        rows = small.deepshrink_report["pruned"]
        heads, neurons = (round(0.3 * 4) * 2, round(0.3 * 128) * 2) if scope == "uniform" else (2, round(0.3 * 256))
        assert sum(r["removed"] for r in rows if r["kind"] == "heads") == heads
        assert sum(r["removed"] for r in rows if r["kind"] == "channels") == neurons
        out = small(*_batches(1, seed=5, bs=3, seq=20)[0])  # another batch size and length still runs
        assert out.shape == (3, 20, 64)
    assert model.bert.encoder.layer[0].intermediate.dense.out_features == 128  # input untouched
    assert err["uniform"] < 0.2 * err["l2"] and err["global"] < 0.2 * err["l2"], err
