"""Benchmark (a): .dsz size of pruned + clustered LeNet-300-100 / LeNet-5 vs fp32 and vs zstd-22.

The compressed state is made here with plain torch code (global magnitude threshold over all
weight matrices, then per-layer exact 1-D k-means with `kmeans1d` on the surviving weights, no
retraining), so the figure is about *storage*: the pruning/clustering engineers' own APIs produce
the same kind of state. Baselines are the bundled trained models on the real MNIST split.

Run:  .venv/bin/python benchmarks/bench_encode_lenet.py
Writes benchmarks/results/encode_lenet.json and prints a summary.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from pathlib import Path

import kmeans1d
import numpy as np
import torch
import zstandard

from deepshrink import encode
from deepshrink.tasks import mnist

log = logging.getLogger("bench_encode_lenet")
OUT = Path(__file__).parent / "results" / "encode_lenet.json"
SETTINGS = [("lenet300", 0.92, 5), ("lenet300", 0.95, 5), ("lenet5", 0.92, 5), ("lenet5", 0.95, 5)]


def prune_and_cluster(model: torch.nn.Module, sparsity: float, bits: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(pruned, pruned + clustered) copies: global magnitude pruning, then per-layer 1-D k-means."""
    import copy

    pruned = copy.deepcopy(model)
    ws = [p for n, p in pruned.named_parameters() if n.endswith("weight") and p.dim() > 1]
    with torch.no_grad():
        allw = torch.cat([w.abs().flatten() for w in ws])
        thr = allw.kthvalue(int(sparsity * allw.numel())).values
        for w in ws:
            w.copy_(torch.where(w.abs() > thr, w, torch.zeros_like(w)))
    clustered = copy.deepcopy(pruned)
    cws = [p for n, p in clustered.named_parameters() if n.endswith("weight") and p.dim() > 1]
    with torch.no_grad():
        for w in cws:
            mask = w != 0
            vals = w[mask].double().numpy()
            labels, centroids = kmeans1d.cluster(vals.tolist(), min(2**bits, len(vals)))
            c = torch.tensor(centroids, dtype=torch.float32)
            w[mask] = c[torch.tensor(labels)]
    return pruned, clustered


def zstd_best(model: torch.nn.Module) -> tuple[int, int]:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    raw = buf.getvalue()
    return len(raw), len(zstandard.ZstdCompressor(level=22).compress(raw))


def run_one(arch: str, sparsity: float, bits: int) -> dict:
    base = mnist.baseline_model(arch).eval()
    _, _, x_test, y_test = mnist.load_split()
    acc = lambda m: float((m(x_test).argmax(1) == y_test).float().mean())  # noqa: E731
    pruned, clustered = prune_and_cluster(base, sparsity, bits)
    params = sum(p.numel() for p in base.parameters())
    fp32 = 4 * params
    t0 = time.perf_counter()
    data = encode.dumps(clustered, coder="auto")
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = encode.loads(data)
    t_dec = time.perf_counter() - t0
    with torch.no_grad():
        exact = bool(torch.equal(decoded(x_test), clustered(x_test)))
        accs = {"baseline": acc(base), "pruned": acc(pruned), "clustered": acc(clustered), "decoded": acc(decoded)}
    st = encode.stats(data)
    torch_bytes, zstd_bytes = zstd_best(clustered)
    sizes = {c: len(encode.dumps(clustered, coder=c)) for c in ("ans", "huffman", "none")}
    stage_pruned = len(encode.dumps(pruned, coder="none", codebooks=False))
    streams = [
        {"tensor": t.name, "stream": s.name, "coder": s.coder, "symbols": s.symbols, "alphabet": s.alphabet,
         "bytes": s.bytes, "table_bytes": s.table_bytes, "coded_bits": s.coded_bits,
         "entropy_bits": round(s.entropy_bits, 1),
         "overhead": round(s.coded_bits / s.entropy_bits - 1, 5) if s.entropy_bits else None}
        for t in st.tensors for s in t.streams if s.coder != "bytes"
    ]
    return {
        "arch": arch, "sparsity": sparsity, "bits": bits, "params": params,
        "nonzero_weights": int(sum(int((p != 0).sum()) for n, p in clustered.named_parameters() if p.dim() > 1)),
        "fp32_bytes": fp32, "torch_save_bytes": torch_bytes, "zstd22_bytes": zstd_bytes,
        "dsz_bytes": len(data), "dsz_bytes_by_coder": sizes,
        # the paper's stages as real .dsz files: pruned (relative indices + raw fp32 values, fixed
        # width), +quantized (codebooks, fixed-width indices), +coded (entropy coding)
        "stage_bytes": {"pruned": stage_pruned, "quantized": sizes["none"], "coded": len(data)},
        "stage_ratios": {"pruned": fp32 / stage_pruned, "quantized": fp32 / sizes["none"], "coded": fp32 / len(data)},
        "ratio_vs_fp32": fp32 / len(data), "ratio_zstd_over_dsz": zstd_bytes / len(data),
        "bits_per_weight": st.bits_per_weight, "header_bytes": st.header_bytes,
        "coded_bits": st.coded_bits, "entropy_bits": st.entropy_bits, "coding_overhead": st.coding_overhead,
        "count_table_bytes": st.table_bytes,
        "encodings": {t.name: t.encoding for t in st.tensors},
        "streams": streams, "accuracy": accs, "decoded_bit_exact": exact,
        "encode_s": t_enc, "decode_s": t_dec,
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(2)
    rows = [run_one(*s) for s in SETTINGS]
    result = {
        "benchmark": "encode_lenet",
        "note": ("pruned+clustered state made in this script (global magnitude pruning + per-layer kmeans1d, "
                 "no retraining), not with deepshrink.prune/quantize APIs; accuracy is without fine-tuning"),
        "torch": torch.__version__, "numpy": np.__version__, "zstandard": zstandard.__version__,
        "python": sys.version.split()[0], "rows": rows,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1))
    for r in rows:
        log.info(
            "%-8s sparsity %.2f %d-bit: fp32 %d B, zstd-22 %d B, .dsz %d B (%.1fx vs fp32, %.2fx smaller than zstd), "
            "%.3f bits/weight, coded streams %.2f%% over entropy, bit-exact %s, acc %.3f->%.3f",
            r["arch"], r["sparsity"], r["bits"], r["fp32_bytes"], r["zstd22_bytes"], r["dsz_bytes"],
            r["ratio_vs_fp32"], r["ratio_zstd_over_dsz"], r["bits_per_weight"], 100 * r["coding_overhead"],
            r["decoded_bit_exact"], r["accuracy"]["baseline"], r["accuracy"]["decoded"],
        )
    log.info("wrote %s", OUT)


if __name__ == "__main__":
    main()
