"""Benchmark: runtime choice - the same model on eager PyTorch, torch.compile (inductor) and onnxruntime.

For the bundled LeNet-5 and the pretrained digit-recognizer-py CNN (batch 32, 2 threads), in fp32
and int8 (deepshrink x86 and onnxruntime backends), `deepshrink.export.compare_runtimes` builds
each runtime's version, checks outputs against eager PyTorch and times them interleaved; the
recommended runtime is the fastest whose outputs match. Runtimes that cannot take a model (torch.ao
int8 in ONNX) are listed with the reason.

Run:  .venv/bin/python benchmarks/bench_quant_runtime.py
Writes benchmarks/results/quant_runtime.json and prints a summary.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

log = logging.getLogger("bench_quant_runtime")
OUT = Path(__file__).parent / "results" / "quant_runtime.json"


def main() -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    warnings.simplefilter("ignore")
    import bench_quant_int8 as bi
    import deepshrink.quantize as Q
    from deepshrink.export import compare_runtimes
    from deepshrink.measure import machine_info
    from deepshrink.tasks.mnist import mnist_task

    task = mnist_task("lenet5")
    calib = [(x,) for x, _ in task.calib_data]
    rows = []
    for name, model in (("LeNet-5", task.model), ("digit-recognizer-py CNN", bi.load_digit_cnn())):
        for variant, m in (
            ("fp32", model),
            ("int8 x86", Q.int8(model, task.example_inputs, calib, backend="x86")),
            ("int8 onnxruntime", Q.int8(model, task.example_inputs, calib, backend="onnxruntime")),
        ):
            rep = compare_runtimes(m, task.example_inputs, batch_size=32, threads=2, repeats=40, atol=1e-2, rtol=1e-2)
            rows.append({"model": name, "variant": variant, "best": rep.best, "rows": rep.to_dict()["rows"]})
    result = {"benchmark": "quant_runtime", "machine": machine_info(), "rows": rows,
              "command": ".venv/bin/python benchmarks/bench_quant_runtime.py"}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2, default=str))
    for r in rows:
        cells = []
        for x in r["rows"]:
            cells.append(f"{x['runtime']} " + (f"{x['median_ms']:.2f} ms{'' if x['matches'] else ' (MISMATCH)'}"
                                               if x["median_ms"] is not None else "n/a"))
        print(f"{r['model']:24s} {r['variant']:17s} " + " | ".join(cells) + f"  -> {r['best']}")
    print(f"wrote {OUT}")
    return result


if __name__ == "__main__":
    main()
