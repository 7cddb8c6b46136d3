"""Benchmark: LeNet-5 on the bundled real MNIST pruned to half its MACs.

The channel ratio is the smallest on a 0.05 grid whose pruned model has <= 50% of the baseline
MACs (uniform over every coupled group: conv filters and FC neurons). Compared without any
fine-tuning: magnitude (l2) vs reconstruction (ThiNet selection + least-squares refit from
``task.calib_data``); then reconstruction + a short fine-tune (2 epochs, Adam 5e-4, the shared
``fit`` loop) against the baseline accuracy on the 1,000 test digits.

Run:  .venv/bin/python benchmarks/bench_structured_mnist.py
Writes benchmarks/results/structured_mnist.json and prints a summary.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np

import deepshrink.prune as P
from deepshrink.distill.loop import fit
from deepshrink.measure import profile
from deepshrink.tasks.mnist import mnist_task

log = logging.getLogger("bench_structured_mnist")
OUT = Path(__file__).parent / "results" / "structured_mnist.json"


def main() -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    task = mnist_task("lenet5")
    base = task.model.eval()
    x = task.example_inputs
    macs0 = profile(base, x).macs
    acc0 = task.evaluate(base)
    ratio = None
    for r in np.arange(0.2, 0.8, 0.05):
        m = P.channels(base, x, float(r))
        if profile(m, x).macs <= 0.5 * macs0:
            ratio = round(float(r), 2)
            break
    res: dict = {"model": "LeNet-5 (bundled, trained on real MNIST 4000)", "baseline_accuracy": acc0,
                 "baseline_macs": macs0, "ratio": ratio, "results": {}}
    for imp in ("l2", "reconstruction"):
        m = P.channels(base, x, ratio, importance=imp, calib_data=task.calib_data)
        res["results"][imp] = {"accuracy_no_finetune": task.evaluate(m), "macs": profile(m, x).macs,
                               "params": profile(m, x).params}
        ft = fit(copy.deepcopy(m), task.train_data, epochs=2, lr=5e-4)
        res["results"][imp]["accuracy_finetuned_2ep"] = task.evaluate(ft)
    r = res["results"]
    res["mac_ratio"] = round(macs0 / r["reconstruction"]["macs"], 3)
    res["finetuned_drop_points"] = round(100 * (acc0 - r["reconstruction"]["accuracy_finetuned_2ep"]), 2)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
