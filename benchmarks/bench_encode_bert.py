"""Benchmark (b): save/load time and peak memory of a ~110M-parameter BERT-base as .dsz, on 2 threads.

BertModel(BertConfig()) with random weights is built offline. BertModel is not made of registered
torch.nn layers only, so it is loaded into a skeleton: ``load(path, model=BertModel(config))``.
Two states are measured: the dense fp32 model, and the same model pruned (90% per-tensor magnitude)
and quantized to 32 levels per weight matrix, which exercises the sparse/codebook/ANS paths at scale.

Every measurement runs in a fresh subprocess (``ru_maxrss`` = peak resident memory of that process,
which includes the Python/torch/transformers runtime, the model and the skeleton); the runtime's
own footprint (after imports, before building anything) is reported too.

Run:  .venv/bin/python benchmarks/bench_encode_bert.py
Writes benchmarks/results/encode_bert.json and prints a summary.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("bench_encode_bert")
OUT = Path(__file__).parent / "results" / "encode_bert.json"
THREADS = 2


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _build(variant: str):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig()).eval()
    if variant == "pruned_q5":
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() == 2 and "embeddings" not in name:
                    k = int(0.9 * p.numel())
                    thr = p.abs().flatten().kthvalue(k).values
                    p.mul_(p.abs() > thr)
                    nz = p[p != 0]
                    lo, hi = float(nz.min()), float(nz.max())
                    q = torch.round((p - lo) / (hi - lo) * 31) / 31 * (hi - lo) + lo
                    p.copy_(torch.where(p != 0, q, p))
    return model


def _digest(model) -> str:
    """SHA-256 of every tensor's bytes (-0.0 counted as +0.0: sparse/codebook store it so)."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            v = v + 0.0
        h.update(k.encode())
        h.update(v.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def worker(mode: str, variant: str, path: str) -> dict:
    import time

    import torch

    torch.set_num_threads(THREADS)
    import transformers  # noqa: F401 - count its import in the runtime footprint

    from deepshrink import encode

    runtime_mb = _rss_mb()
    model = _build(variant)
    params = sum(p.numel() for p in model.parameters())
    before_mb = _rss_mb()
    if mode == "save":
        t0 = time.perf_counter()
        size = encode.save(model, path)
        secs = time.perf_counter() - t0
        peak = _rss_mb()
        return {"mode": mode, "variant": variant, "seconds": secs, "file_bytes": size, "params": params,
                "runtime_mb": runtime_mb, "after_model_mb": before_mb, "peak_mb": peak, "digest": _digest(model)}
    t0 = time.perf_counter()
    out = encode.load(path, model=model)  # model = the freshly built skeleton
    secs = time.perf_counter() - t0
    peak = _rss_mb()
    return {"mode": mode, "variant": variant, "seconds": secs, "params": params, "runtime_mb": runtime_mb,
            "after_skeleton_mb": before_mb, "peak_mb": peak, "digest": _digest(out)}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("dense_fp32", "pruned_q5"):
            path = os.path.join(tmp, f"{variant}.dsz")
            res = {}
            for mode in ("save", "load"):
                out = subprocess.run([sys.executable, __file__, "--worker", mode, variant, path], env=env,
                                     check=True, capture_output=True, text=True)
                res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            fp32_mb = 4 * res["save"]["params"] / 2**20
            rows.append({
                "variant": variant, "params": res["save"]["params"], "fp32_mb": fp32_mb,
                "file_bytes": res["save"]["file_bytes"], "ratio_vs_fp32": 4 * res["save"]["params"] / res["save"]["file_bytes"],
                "save_s": res["save"]["seconds"], "load_s": res["load"]["seconds"],
                "save_peak_mb": res["save"]["peak_mb"], "load_peak_mb": res["load"]["peak_mb"],
                "save_peak_over_fp32": res["save"]["peak_mb"] / fp32_mb,
                "load_peak_over_fp32": res["load"]["peak_mb"] / fp32_mb,
                "runtime_mb": res["save"]["runtime_mb"],
                "save_peak_above_runtime_over_fp32": (res["save"]["peak_mb"] - res["save"]["runtime_mb"]) / fp32_mb,
                "load_peak_above_runtime_over_fp32": (res["load"]["peak_mb"] - res["load"]["runtime_mb"]) / fp32_mb,
                "bit_exact": res["save"]["digest"] == res["load"]["digest"],
                "raw": res,
            })
    result = {"benchmark": "encode_bert", "threads": THREADS, "model": "transformers BertModel(BertConfig()) random init",
              "load_mode": "load(path, model=skeleton) -- skeleton built before timing, its memory included in peak",
              "rows": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1))
    for r in rows:
        log.info("%-10s %.1fM params, fp32 %.0f MB, file %.1f MB (%.1fx): save %.1f s (peak %.0f MB = %.2fx fp32), "
                 "load %.1f s (peak %.0f MB = %.2fx fp32), runtime alone %.0f MB, bit-exact %s",
                 r["variant"], r["params"] / 1e6, r["fp32_mb"], r["file_bytes"] / 2**20, r["ratio_vs_fp32"],
                 r["save_s"], r["save_peak_mb"], r["save_peak_over_fp32"], r["load_s"], r["load_peak_mb"],
                 r["load_peak_over_fp32"], r["runtime_mb"], r["bit_exact"])
    log.info("wrote %s", OUT)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], sys.argv[3], sys.argv[4])))
    else:
        main()
