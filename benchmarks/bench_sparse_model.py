"""Sparse execution of a whole model: the Deep-Compression-pruned LeNet-300-100, dense vs `sparsify`.

The bundled trained LeNet-300-100 is pruned to 95% / 97% with class-blind magnitude pruning and
gradual retraining (the `deep_compression` recipe's pruning stage), then `prune.sparse.sparsify`
decides per layer (timed on the layer's real input) whether CSR/BSR beats dense at each batch
size. The whole sparse model is timed against the same pruned model run dense, interleaved with
`deepshrink.measure.compare_latency` (warm-up, median), at 1 and 2 threads.

Run:  .venv/bin/python benchmarks/bench_sparse_model.py
Writes benchmarks/results/sparse_model.json and prints a summary.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import deepshrink
from deepshrink.measure import compare_latency, machine_info
from deepshrink.prune.sparse import sparsify
from deepshrink.tasks import load_task

OUT = Path(__file__).parent / "results" / "sparse_model.json"


def pruned(task, sparsity: float):
    recipe = [{"type": "magnitude_prune", "sparsity": sparsity, "schedule": "gradual", "retrain_epochs": 8}]
    res = deepshrink.compress(task.model, task.example_inputs, recipe, task=task, measure_latency=False,
                              progress=False)
    return res.model, res.report.final.accuracy


def main() -> dict:
    warnings.simplefilter("ignore")
    task = load_task("mnist")
    x = task.eval_data[0][0] if isinstance(task.eval_data, list) else next(iter(task.eval_data))[0]
    out = {"machine": machine_info(), "load_average_start": list(os.getloadavg()), "runs": []}
    for sparsity in (0.95, 0.97):
        dense, acc = pruned(task, sparsity)
        for batch in (1, 8, 32):
            xb = x[:batch]
            for threads in (1, 2):
                fast, table = sparsify(dense, xb, threads=threads, repeats=60)
                fast_acc = task.evaluate(fast)
                c = compare_latency(dense, fast, xb, threads=threads, warmup=20, repeats=200)
                row = {"sparsity": sparsity, "batch": batch, "threads": threads, "accuracy_dense": acc,
                       "accuracy_sparse": fast_acc, "dense_ms": c.baseline_ms, "sparse_ms": c.candidate_ms,
                       "speedup": c.speedup,
                       "layers": {r["layer"]: r["chosen"] for r in table}}
                out["runs"].append(row)
                print(json.dumps(row), flush=True)
    out["load_average_end"] = list(os.getloadavg())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2))
    print("\n| sparsity | batch | threads | dense µs | sparse µs | speedup | layers run sparse |")
    print("|---|---|---|---|---|---|---|")
    for r in out["runs"]:
        sp = ", ".join(f"{k}:{v}" for k, v in r["layers"].items() if v != "dense") or "none"
        print(f"| {r['sparsity']:.0%} | {r['batch']} | {r['threads']} | {r['dense_ms'] * 1e3:.0f} | "
              f"{r['sparse_ms'] * 1e3:.0f} | {r['speedup']:.2f}x | {sp} |")
    return out


if __name__ == "__main__":
    main()
