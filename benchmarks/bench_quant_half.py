"""Benchmark: fp16 / bf16 vs fp32 on this CPU (2 threads): when is half precision slower?

Models: bundled LeNet-5 (batch 32), the pretrained digit-recognizer-py CNN (batch 32) and the real
all-MiniLM-L6-v2 sentence embedder (batch 8, sequence 128). `deepshrink.quantize.fp16/bf16` keep fp32
inputs/outputs. fp32, fp16 and bf16 are timed in one round-robin loop (same conditions), median
and min of the runs; fidelity is accuracy on the bundled MNIST test split (CNNs) or the mean cosine
of the embeddings to fp32 (MiniLM, 64 template sentences).

Run:  .venv/bin/python benchmarks/bench_quant_half.py
Writes benchmarks/results/quant_half.json and prints a summary.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
import warnings
from pathlib import Path

import torch

log = logging.getLogger("bench_quant_half")
OUT = Path(__file__).parent / "results" / "quant_half.json"
THREADS = 2


@torch.inference_mode()
def round_robin(models: dict, inputs: tuple, rounds: int = 30) -> dict:
    from deepshrink.measure import pinned_threads

    times: dict[str, list[float]] = {k: [] for k in models}
    with pinned_threads(THREADS):
        for m in models.values():
            for _ in range(3):
                m(*inputs)
        order = list(models)
        for i in range(rounds):
            for k in order if i % 2 == 0 else reversed(order):
                t = time.perf_counter()
                models[k](*inputs)
                times[k].append((time.perf_counter() - t) * 1e3)
    return {k: {"median_ms": round(statistics.median(v), 3), "min_ms": round(min(v), 3)} for k, v in times.items()}


def main() -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.simplefilter("ignore")
    import bench_quant_int8 as bi
    import bench_quant_minilm as bm
    import deepshrink.quantize as Q
    from deepshrink.inputs import rebatch
    from deepshrink.measure import machine_info, top1_accuracy
    from deepshrink.tasks.mnist import mnist_task

    task = mnist_task("lenet5")
    rows = []
    for name, model in (("LeNet-5", task.model), ("digit-recognizer-py CNN", bi.load_digit_cnn())):
        variants = {"fp32": model, "fp16": Q.fp16(model), "bf16": Q.bf16(model)}
        with torch.no_grad():
            acc = {k: top1_accuracy(m, task.eval_data) for k, m in variants.items()}
        t = round_robin(variants, rebatch(task.example_inputs, 32))
        rows.append({"model": name, "batch": 32, "accuracy": acc, "timing": t})
    tok, emb = bm.load_minilm()
    ids, mask = bm.encode(tok, bm.sentences(64, seed=3))
    variants = {"fp32": emb, "fp16": Q.fp16(emb), "bf16": Q.bf16(emb)}
    ref = bm.embed(emb, ids, mask)
    cos = {k: round(float(torch.nn.functional.cosine_similarity(bm.embed(m, ids, mask), ref).mean()), 5)
           for k, m in variants.items()}
    t = round_robin(variants, (ids[:8], mask[:8]), rounds=10)
    rows.append({"model": "all-MiniLM-L6-v2", "batch": 8, "seq": 128, "mean_cosine": cos, "timing": t})
    result = {"benchmark": "quant_half", "threads": THREADS, "machine": machine_info(), "rows": rows,
              "command": ".venv/bin/python benchmarks/bench_quant_half.py"}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2, default=str))
    for r in rows:
        base = r["timing"]["fp32"]["median_ms"]
        parts = []
        for k in ("fp16", "bf16"):
            tm = r["timing"][k]["median_ms"]
            parts.append(f"{k} {tm:.2f} ms ({base / tm:.2f}x{' SLOWER' if tm > base else ''})")
        fid = r.get("accuracy") or r.get("mean_cosine")
        print(f"{r['model']:26s} fp32 {base:.2f} ms | " + " | ".join(parts) + f" | fidelity {fid}")
    print(f"wrote {OUT}")
    return result


if __name__ == "__main__":
    main()
