"""Benchmark: measured CPU speedup of 50% channel pruning on ResNet-50, deepshrink vs Torch-Pruning.

Model: transformers ``ResNetForImageClassification(ResNetConfig())`` (ResNet-50 shape, random
weights, 1000-way head kept). Both tools remove 50% of the channels of every prunable group with
L2 magnitude importance (Torch-Pruning 1.6.1 ``MagnitudePruner``, classifier ignored). Timings are
``deepshrink.measure.compare_latency`` (interleaved, 2 threads, warm-up, median) at batch 1 and 8,
224x224, in eager PyTorch; channels_last and ``round_to=8`` variants show what layout and widths do.
The shared 2-core machine is usually loaded by other jobs; with 2 threads the OpenMP barriers then
dominate, so 1-thread ratios are recorded too (with the load average at the start).

Run:  .venv/bin/python benchmarks/bench_structured_resnet50.py [--quick]
      .venv/bin/python benchmarks/bench_structured_resnet50.py --head-to-head  (the two pruned models
      timed against each other; adds "head_to_head" to the JSON)
Writes benchmarks/results/structured_resnet50.json and prints a summary.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
from pathlib import Path

import torch

import deepshrink.prune as P
from deepshrink.measure import compare_latency, profile

log = logging.getLogger("bench_structured_resnet50")
OUT = Path(__file__).parent / "results" / "structured_resnet50.json"


class Logits(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x).logits


def build():
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    return Logits(ResNetForImageClassification(ResNetConfig(num_labels=1000))).eval()


def torch_pruning(model, x, ratio, round_to=None):
    import torch_pruning as tp

    m = copy.deepcopy(model)
    imp = tp.importance.MagnitudeImportance(p=2)
    pruner = tp.pruner.MagnitudePruner(m, x, importance=imp, pruning_ratio=ratio,
                                       ignored_layers=[m.m.classifier[-1]], round_to=round_to)
    pruner.step()
    return m.eval()


def main(quick: bool = False) -> dict:
    logging.basicConfig(level=logging.INFO)
    x1 = torch.randn(1, 3, 224, 224)
    base = build()
    prof0 = profile(base, x1)
    t = time.time()
    ours = P.channels(base, x1, 0.5, importance="l2")
    t_ours = time.time() - t
    ours8 = P.channels(base, x1, 0.5, importance="l2", round_to=8)
    t = time.time()
    tp_model = torch_pruning(base, x1, 0.5)
    t_tp = time.time() - t
    models = {"deepshrink": ours, "torch_pruning": tp_model, "deepshrink_round8": ours8}
    res: dict = {"model": "transformers ResNetForImageClassification(ResNetConfig()) = ResNet-50",
                 "ratio": 0.5, "baseline": {"params": prof0.params, "macs": prof0.macs},
                 "prune_seconds": {"deepshrink": round(t_ours, 2), "torch_pruning": round(t_tp, 2)}, "models": {}}
    budget = 8.0 if quick else 20.0
    res["load_average"] = list(__import__("os").getloadavg())
    for name, m in models.items():
        pr = profile(m, x1)
        with torch.no_grad():
            assert m(x1).shape == base(x1).shape
        row = {"params": pr.params, "macs": pr.macs, "mac_ratio": prof0.macs / pr.macs, "latency": {}}
        for bs, threads in ((1, 2), (8, 2), (1, 1), (8, 1)):
            c = compare_latency(base, m, x1, threads=threads, batch_size=bs, warmup=2, repeats=20,
                                max_seconds=budget)
            key = f"batch{bs}" + ("" if threads == 2 else "_1thread")
            row["latency"][key] = c.to_dict()
            print(name, key, round(c.speedup, 3), flush=True)
            if name == "deepshrink" and threads == 2:
                cl_base = copy.deepcopy(base).to(memory_format=torch.channels_last)
                cl = copy.deepcopy(m).to(memory_format=torch.channels_last)
                xc = x1.contiguous(memory_format=torch.channels_last)
                c2 = compare_latency(cl_base, cl, xc, threads=2, batch_size=bs, warmup=2, repeats=20,
                                     max_seconds=budget)
                row["latency"][f"batch{bs}_channels_last"] = c2.to_dict()
                print(name, f"batch{bs}_channels_last", round(c2.speedup, 3), flush=True)
        res["models"][name] = row
        log.info("%s: MACs %.2fx fewer, speedup b1 %.2fx b8 %.2fx", name, row["mac_ratio"],
                 row["latency"]["batch1"]["speedup"], row["latency"]["batch8"]["speedup"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: {"mac_ratio": round(v["mac_ratio"], 2),
                          **{b: round(v["latency"][b]["speedup"], 2) for b in v["latency"]}}
                      for k, v in res["models"].items()}, indent=2))
    return res


def head_to_head() -> dict:
    """deepshrink's and Torch-Pruning's pruned models timed against each other (2 threads); merged
    into the JSON under "head_to_head"."""
    x1 = torch.randn(1, 3, 224, 224)
    base = build()
    ours = P.channels(base, x1, 0.5, importance="l2")
    tp_model = torch_pruning(base, x1, 0.5)
    out = {"same_layer_shapes": [tuple(p.shape) for p in ours.parameters()]
           == [tuple(p.shape) for p in tp_model.parameters()], "load_average": list(__import__("os").getloadavg())}
    for bs in (1, 8):
        c = compare_latency(tp_model, ours, x1, threads=2, batch_size=bs, warmup=2, repeats=20, max_seconds=30)
        out[f"batch{bs}"] = {"torch_pruning_ms": c.baseline_ms, "deepshrink_ms": c.candidate_ms,
                             "deepshrink_speedup_over_torch_pruning": c.speedup}
    res = json.loads(OUT.read_text()) if OUT.exists() else {}
    res["head_to_head"] = out
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    if "--head-to-head" in sys.argv:
        head_to_head()
    else:
        main(quick="--quick" in sys.argv)
