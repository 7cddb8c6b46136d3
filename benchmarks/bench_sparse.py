"""Sparse execution: dense vs CSR / BSR Linear layers at 50–99% sparsity, batch 1 / 8 / 32.

Layers: LeNet-300-100's three Linear layers and a BERT-base FFN (768→3072, 3072→768). Weights are
random with unstructured sparsity for dense vs CSR; BSR (4×4 blocks) is timed on block-pruned
weights of the same sparsity (the pattern BSR is for — unstructured 95% sparsity leaves ~56% of
4×4 blocks non-empty). Each pair is timed interleaved in this process with
`deepshrink.measure.compare_latency` (2 threads, warm-up, median), in `--trials` independent
comparisons of which the median-speedup one is kept. Reports the crossover sparsity
per layer and batch size: the lowest sparsity from which on CSR beats dense at every measured
point.

Run: .venv/bin/python benchmarks/bench_sparse.py [--repeats 60] [--threads 2] [--trials 3]
Writes benchmarks/results/sparse.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from deepshrink.measure import compare_latency, machine_info
from deepshrink.prune.sparse import SparseLinear

LAYERS = {
    "lenet300.fc1": (784, 300),
    "lenet300.fc2": (300, 100),
    "lenet300.fc3": (100, 10),
    "bert.ffn.intermediate": (768, 3072),
    "bert.ffn.output": (3072, 768),
}
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
BATCHES = (1, 8, 32)


def _layer(i: int, o: int, s: float, *, block: int | None, seed: int) -> nn.Linear:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(i, o)
    with torch.no_grad():
        if block is None:
            keep = torch.rand(o, i, generator=g) >= s
        else:
            kb = torch.rand(o // block, i // block, generator=g) >= s
            keep = kb.repeat_interleave(block, 0).repeat_interleave(block, 1)
        lin.weight.mul_(keep)
    return lin.eval()


def _compare(a: nn.Module, b: nn.Module, x: torch.Tensor, args):
    trials = [compare_latency(a, b, (x,), threads=args.threads, repeats=args.repeats, warmup=10)
              for _ in range(args.trials)]
    return sorted(trials, key=lambda r: r.speedup)[len(trials) // 2]


def _crossover(points: list[tuple[float, float]]) -> float | None:
    cross = None
    for s, speedup in sorted(points, reverse=True):
        if speedup > 1.0:
            cross = s
        else:
            break
    return cross


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trials", type=int, default=3,
                    help="independent interleaved comparisons per point; the median-speedup trial is kept "
                         "(filters bursts of load from other processes on a shared machine)")
    ap.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sparse.json"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
    logging.basicConfig(level=logging.WARNING)
    t0 = time.time()
    rows = []
    layers = {k: LAYERS[k] for k in args.layers}
    for name, (i, o) in layers.items():
        for b in BATCHES:
            x = torch.randn(b, i)
            for s in SPARSITIES:
                row = {"layer": name, "in": i, "out": o, "batch": b, "sparsity": s}
                dense = _layer(i, o, s, block=None, seed=0)
                csr = SparseLinear.from_dense(dense, "csr").eval()
                with torch.no_grad():
                    assert torch.allclose(csr(x), dense(x), atol=1e-4)
                r = _compare(dense, csr, x, args)
                row.update(dense_ms=r.baseline_ms, csr_ms=r.candidate_ms, csr_speedup=r.speedup)
                if o % 4 == 0 and i % 4 == 0 and o >= 4:
                    dense_b = _layer(i, o, s, block=4, seed=0)
                    bsr = SparseLinear.from_dense(dense_b, "bsr", (4, 4)).eval()
                    r = _compare(dense_b, bsr, x, args)
                    row.update(bsr_dense_ms=r.baseline_ms, bsr_ms=r.candidate_ms, bsr_speedup=r.speedup)
                rows.append(row)
                print(f"{name:22s} b={b:2d} s={s:.2f} dense {row['dense_ms']*1e3:8.1f}us "
                      f"csr {row['csr_ms']*1e3:8.1f}us ({row['csr_speedup']:.2f}x)"
                      + (f" bsr {row['bsr_speedup']:.2f}x" if "bsr_speedup" in row else ""), flush=True)
    crossover = {}
    for name in layers:
        for b in BATCHES:
            pts = [(r["sparsity"], r["csr_speedup"]) for r in rows if r["layer"] == name and r["batch"] == b]
            pts_b = [(r["sparsity"], r["bsr_speedup"]) for r in rows
                     if r["layer"] == name and r["batch"] == b and "bsr_speedup" in r]
            crossover[f"{name}@b{b}"] = {"csr": _crossover(pts), "bsr": _crossover(pts_b) if pts_b else None}
    at95 = {f"{r['layer']}@b{r['batch']}": round(r["csr_speedup"], 3) for r in rows if r["sparsity"] == 0.95}
    result = {
        "benchmark": "sparse_exec",
        "command": "python benchmarks/bench_sparse.py",
        "threads": args.threads,
        "repeats": args.repeats,
        "trials": args.trials,
        "machine": machine_info(),
        "rows": rows,
        "crossover_sparsity": crossover,
        "csr_speedup_at_95": at95,
        "seconds": round(time.time() - t0, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("\ncrossover sparsity (CSR | BSR-on-block-sparse) per layer@batch:")
    for k, v in crossover.items():
        print(f"  {k:28s} csr {v['csr']}  bsr {v['bsr']}")
    print("\nCSR speedup at 95% sparsity:", json.dumps(at95))
    print(f"wrote {args.out} in {result['seconds']} s")


if __name__ == "__main__":
    main()
