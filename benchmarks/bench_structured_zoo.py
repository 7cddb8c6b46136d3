"""Benchmark: zoo coverage of 30% structural pruning, deepshrink vs Torch-Pruning 1.6.1.

For every model of tests/zoo (Hugging Face architectures from tiny configs + hand-written models
for each op pattern), both tools remove 30% of the channels of every group (L2 magnitude):
deepshrink ``prune.channels(model, x, 0.3)``; Torch-Pruning ``MagnitudePruner(pruning_ratio=0.3)``
with the layers that produce the model outputs ignored (so output shapes may stay) and, for
attention modules with ``query/key/value`` (or ``q_lin/k_lin/v_lin``) Linears, the head counts
passed as ``num_heads`` with ``prune_num_heads=True`` as in Torch-Pruning's own HF examples.
A run succeeds when the pruned model runs with the original output shapes and fewer params/MACs.

Run:  .venv/bin/python benchmarks/bench_structured_zoo.py
Writes benchmarks/results/structured_zoo.json and prints a Markdown table.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.zoo.custom_models import CUSTOM_ZOO  # noqa: E402
from tests.zoo.hf_models import HF_ZOO  # noqa: E402

OUT = Path(__file__).parent / "results" / "structured_zoo.json"


def macs(m, x):
    """MACs by `deepshrink.profile` (torch's flop counter plus the fused attention kernels it misses)."""
    from deepshrink.measure import profile

    return profile(m, x).macs


def params(m):
    return sum(p.numel() for p in m.parameters())


def outs(m, x):
    with torch.no_grad():
        o = m(*x)
    return [t.shape for t in (o if isinstance(o, tuple) else (o,))]


def output_layers(model, x):
    from deepshrink.graph import DependencyGraph

    g = DependencyGraph.build(model, x)
    mods = dict(model.named_modules())
    # Only the layers whose *output* dim feeds a model output: ignoring the consumers too (q/k/v,
    # FFN input Linears read the residual stream) would stop Torch-Pruning from pruning heads/FFNs.
    names = {name.rpartition(".")[0] for grp in g.groups if "model output" in grp.reason
             for name, dim in grp.members if dim == 0 and name.endswith(".weight")}
    return [mods[n] for n in names if n in mods and isinstance(mods[n], (nn.Linear, nn.Conv2d, nn.Conv1d))]


def torch_pruning(model, x, ratio):
    import torch_pruning as tp

    m = copy.deepcopy(model)
    num_heads = {}
    for mod in m.modules():
        for q, k, v, attr in (("query", "key", "value", "num_attention_heads"), ("q_lin", "k_lin", "v_lin", "n_heads")):
            if all(isinstance(getattr(mod, n, None), nn.Linear) for n in (q, k, v)) and hasattr(mod, attr):
                for n in (q, k, v):
                    num_heads[getattr(mod, n)] = getattr(mod, attr)
    pruner = tp.pruner.MagnitudePruner(m, x if len(x) > 1 else x[0], importance=tp.importance.MagnitudeImportance(p=2),
                                       pruning_ratio=ratio, ignored_layers=output_layers(m, x),  # the copy's modules
                                       num_heads=num_heads, prune_num_heads=bool(num_heads), prune_head_dims=False)
    pruner.step()
    if num_heads:  # Torch-Pruning leaves the head-count attributes to the user (its HF example does this)
        for mod in m.modules():
            for q, attr, size in (("query", "num_attention_heads", "attention_head_size"), ("q_lin", "n_heads", None)):
                if mod in () or not isinstance(getattr(mod, q, None), nn.Linear) or not hasattr(mod, attr):
                    continue
                head = getattr(mod, size, None) if size else getattr(mod, "attention_head_size", None)
                if head:
                    setattr(mod, attr, getattr(mod, q).out_features // head)
                if hasattr(mod, "all_head_size"):
                    mod.all_head_size = getattr(mod, q).out_features
    return m.eval()


def run(tool, model, x):
    t = time.time()
    try:
        small = P.channels(model, x, 0.3) if tool == "deepshrink" else torch_pruning(model, x, 0.3)
        ok_shape = outs(small, x) == outs(model, x)
        p, mc = params(small), macs(small, x)
        ok = ok_shape and p < params(model) and mc < macs(model, x)
        row = {"ok": ok, "params_ratio": round(params(model) / p, 3), "macs_ratio": round(macs(model, x) / mc, 3),
               "seconds": round(time.time() - t, 2)}
        if not ok_shape:
            row["error"] = "output shape changed"
        elif not ok:
            row["error"] = "params/MACs not reduced"
        if tool == "deepshrink":
            row["skipped_groups"] = len(small.deepshrink_report["skipped"])
            row["kinds"] = sorted({r["kind"] for r in small.deepshrink_report["pruned"]})
        return row
    except Exception as exc:  # noqa: BLE001 - a failure is a result here
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:160]}", "seconds": round(time.time() - t, 2)}


import deepshrink.prune as P  # noqa: E402


def main() -> dict:
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    rows = {}
    cases = [(f"hf:{n}", f) for n, f in HF_ZOO.items()] + [
        (f"custom:{n}", (lambda c=c, mk=mk: (c(), mk()))) for n, (c, mk) in CUSTOM_ZOO.items()]
    for name, make in cases:
        torch.manual_seed(0)
        model, x = make()
        model.eval()
        rows[name] = {tool: run(tool, model, x) for tool in ("deepshrink", "torch_pruning")}
        print(name, json.dumps(rows[name]), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(rows, indent=2))
    print("\n| model | deepshrink | MACs ratio | Torch-Pruning | MACs ratio |\n|---|---|---|---|---|")
    for name, r in rows.items():
        d, t = r["deepshrink"], r["torch_pruning"]
        print(f"| {name} | {'ok' if d['ok'] else 'FAIL: ' + d.get('error', '')} | {d.get('macs_ratio', '')} | "
              f"{'ok' if t['ok'] else 'FAIL: ' + t.get('error', '')} | {t.get('macs_ratio', '')} |")
    n_d = sum(r["deepshrink"]["ok"] for r in rows.values())
    n_t = sum(r["torch_pruning"]["ok"] for r in rows.values())
    print(f"\ndeepshrink {n_d}/{len(rows)}, Torch-Pruning {n_t}/{len(rows)}")
    return rows


if __name__ == "__main__":
    main()
