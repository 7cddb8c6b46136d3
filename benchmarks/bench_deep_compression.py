"""Deep Compression on the bundled real MNIST split: LeNet-300-100 and LeNet-5.

Runs the bundled `deep_compression` recipe (gradual class-blind magnitude pruning with retraining →
5-bit k-means weight sharing with centroid fine-tuning → entropy-coded .dsz) through
`deepshrink.compress` and reports the paper's stages (Han et al. 2016, Table 2/3):

- pruned:     the pruned fp32 model stored as .dsz without entropy coding (sparse, relative indices)
- +quantized: after weight sharing, .dsz without entropy coding (codebook indices)
- +coded:     the real .dsz file (entropy-coded streams), decoded and re-evaluated

each as fp32 state_dict bytes / bytes, with test accuracy on the 1,000 held-out digits.

Run: .venv/bin/python benchmarks/bench_deep_compression.py [--arch lenet300 lenet5]
Writes benchmarks/results/deep_compression.json.
`--ablation` instead compares clustering variants (init, exact 1-D k-means, Hessian-weighted,
uniform) at 2–4 bits on one pruned model before fine-tuning; writes deep_compression_ablation.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from deepshrink.api import compress
from deepshrink.measure import machine_info
from deepshrink.recipe import Recipe
from deepshrink.tasks.mnist import mnist_task

PAPER = {  # Han et al., Deep Compression, Table 1: compression ratio and top-1 error (full MNIST)
    "lenet300": {"ratio": 40, "baseline_error": 0.0164, "compressed_error": 0.0158, "weights_kept": 0.08},
    "lenet5": {"ratio": 39, "baseline_error": 0.0080, "compressed_error": 0.0074, "weights_kept": 0.08},
}


def run(arch: str, recipe: Recipe) -> dict:
    torch.set_num_threads(2)
    task = mnist_task(arch)
    t0 = time.perf_counter()
    res = compress(task.model, task.example_inputs, recipe, task=task)
    seconds = time.perf_counter() - t0
    rep = res.report
    base = rep.baseline
    by_type = {}
    for step, row in zip(recipe.steps, rep.steps, strict=True):
        by_type[type(step).type_name] = row
    stages = {"baseline": {"bytes": base.size_bytes, "ratio": 1.0, "accuracy": base.accuracy}}
    for label, key in (("pruned", "magnitude_prune"), ("+quantized", "cluster"), ("+coded", "encode")):
        row = by_type[key]
        stages[label] = {
            "bytes": row.size_bytes,
            "artifact": row.artifact,
            "ratio": round(base.size_bytes / row.size_bytes, 2),
            "accuracy": row.accuracy,
        }
    prune_x, cluster_x, enc_x = by_type["magnitude_prune"].extras, by_type["cluster"].extras, by_type["encode"].extras
    return {
        "arch": arch,
        "fp32_bytes": base.size_bytes,
        "dsz_bytes": len(res.artifact) if res.artifact else None,
        "compression_ratio": round(rep.compression_ratio, 2),
        "baseline_accuracy": base.accuracy,
        "final_accuracy": rep.final.accuracy,
        "accuracy_drop_points": round(100 * (base.accuracy - rep.final.accuracy), 2),
        "stages": stages,
        "sparsity": prune_x.get("sparsity"),
        "layer_sparsity": prune_x.get("layer_sparsity"),
        "distinct_values": cluster_x.get("distinct_values"),
        "bits_per_weight": enc_x.get("bits_per_weight"),
        "coding_overhead": enc_x.get("coding_overhead"),
        "recipe_seconds": round(seconds, 1),
        "step_seconds": {type(s).type_name: round(r.seconds, 1) for s, r in zip(recipe.steps, rep.steps, strict=True)},
        "paper": PAPER[arch],
    }


ABLATION = (  # weight-sharing variants on one pruned model, before fine-tuning (differences show)
    {"init": "linear", "method": "kmeans", "exact": False},
    {"init": "forgy", "method": "kmeans", "exact": False},
    {"init": "density", "method": "kmeans", "exact": False},
    {"init": "linear", "method": "kmeans", "exact": True},
    {"init": "linear", "method": "hessian"},
    {"init": "linear", "method": "uniform"},
)


def ablation(arch: str, bits: tuple[int, ...] = (2, 3, 4)) -> list[dict]:
    """Accuracy and .dsz bytes of each clustering variant on the same pruned model (no fine-tuning)."""
    from deepshrink.encode import dumps
    from deepshrink.prune.unstructured import finalize, gradual_prune
    from deepshrink.quantize.cluster import cluster

    torch.set_num_threads(2)
    task = mnist_task(arch)
    pruned = finalize(gradual_prune(task.model, 0.97, task.train_data, epochs=8))
    base = task.model
    fp32 = sum(t.numel() * 4 for t in base.state_dict().values())
    rows = [{"variant": "pruned (no sharing)", "bits": None, "accuracy": task.evaluate(pruned),
             "dsz_bytes": len(dumps(pruned))}]
    for b in bits:
        for cfg in ABLATION:
            data = task.train_data if cfg["method"] != "kmeans" else None
            t0 = time.perf_counter()
            c = cluster(pruned, b, data=data, max_batches=16, **cfg)
            secs = time.perf_counter() - t0
            n = len(dumps(c))
            rows.append({"variant": ", ".join(f"{k}={v}" for k, v in cfg.items()), "bits": b,
                         "accuracy": task.evaluate(c), "dsz_bytes": n, "ratio": round(fp32 / n, 2),
                         "cluster_seconds": round(secs, 3)})
            print(f"  {b} bits {rows[-1]['variant']:42s} acc {rows[-1]['accuracy']:.3f}  {n} B "
                  f"({rows[-1]['ratio']}x)  {secs:.2f} s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["lenet300", "lenet5"], choices=["lenet300", "lenet5"])
    ap.add_argument("--recipe", default="deep_compression")
    ap.add_argument("--ablation", action="store_true",
                    help="instead: compare clustering variants (init / exact / Hessian / uniform) at 2-4 bits")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/deep_compression[_ablation].json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results_dir = Path(__file__).parent / "results"
    if args.ablation:
        out = Path(args.out or results_dir / "deep_compression_ablation.json")
        results = {"benchmark": "deep_compression_ablation",
                   "command": "python benchmarks/bench_deep_compression.py --ablation",
                   "machine": machine_info(), "torch_threads": 2, "ablation": {}}
        for arch in args.arch:
            print(f"\nclustering ablation on pruned {arch} (97% gradual, no centroid fine-tuning):")
            results["ablation"][arch] = ablation(arch)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1, default=str))
        print(f"\nwrote {out}")
        return
    out = Path(args.out or results_dir / "deep_compression.json")
    recipe = Recipe.load(args.recipe)
    results = {"benchmark": "deep_compression", "command": "python benchmarks/bench_deep_compression.py",
               "recipe": recipe.to_list(), "machine": machine_info(), "torch_threads": 2, "models": []}
    for arch in args.arch:
        r = run(arch, recipe)
        results["models"].append(r)
        print(f"\n{arch}: fp32 {r['fp32_bytes']} B -> .dsz {r['dsz_bytes']} B = {r['compression_ratio']}x, "
              f"accuracy {r['baseline_accuracy']:.3f} -> {r['final_accuracy']:.3f} "
              f"(drop {r['accuracy_drop_points']} points), recipe {r['recipe_seconds']} s")
        for label, st in r["stages"].items():
            print(f"  {label:11s} {st['bytes']:>9d} B  {st['ratio']:>7.2f}x  acc {st['accuracy']:.3f}")
        print(f"  sparsity {r['sparsity']} per layer {r['layer_sparsity']}")
        print(f"  distinct values {r['distinct_values']}, bits/weight {r['bits_per_weight']:.3f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
