"""`deepshrink export`: a thin shell over `deepshrink.export` (heavy imports happen only in `run`).

    deepshrink export --task mnist-lenet5 --out model.onnx [--quantize int8] [--compare-runtimes]
    deepshrink export --task mnist-lenet5 --format program --out model.pt2

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> add_arguments(p)
    >>> p.parse_args(["--task", "t", "--out", "m.onnx"]).format
    'onnx'
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `export` subcommand's options to `parser`."""
    parser.add_argument("--task", required=True, help="bundled name, a .py file or module:function")
    parser.add_argument("--out", required=True, help="output file (.onnx or .pt2)")
    parser.add_argument("--format", choices=("onnx", "program"), default="onnx",
                        help="ONNX (verified in onnxruntime) or a torch.export program")
    parser.add_argument("--quantize", choices=("none", "int8", "int8-dynamic", "fp16", "bf16"), default="none",
                        help="quantize first; int8 for ONNX uses onnxruntime QDQ with the task's calibration data")
    parser.add_argument("--calibration", choices=("minmax", "percentile", "entropy"), default="minmax")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--no-verify", action="store_true", help="skip the output-by-output check")
    parser.add_argument("--compare-runtimes", action="store_true",
                        help="time eager / torch.compile / onnxruntime and recommend the fastest that matches")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size for --compare-runtimes")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    """Run `deepshrink export` with parsed `args`; returns the exit code."""
    import deepshrink.export as ex
    import deepshrink.quantize as Q
    from deepshrink.tasks import load_task

    task = load_task(args.task)
    model, inputs = task.model.eval(), task.example_inputs
    summary: dict = {"task": task.name, "format": args.format, "quantize": args.quantize, "out": args.out}
    if args.quantize in ("int8", "int8-dynamic"):
        calib = task.calib_data if args.quantize == "int8" else None
        backend = "onnxruntime" if args.format == "onnx" else "x86"
        model = Q.int8(model, inputs, calib, backend=backend, calibration=args.calibration)
        summary["int8"] = {"backend": backend, "cosine": model.quant_info.cosine,
                           "fallback": model.quant_info.fallback}
    elif args.quantize in ("fp16", "bf16"):
        model = Q.half(model, args.quantize)
    if args.format == "onnx":
        path = ex.onnx(model, inputs, args.out, verify=not args.no_verify, opset=args.opset)
    else:
        ex.program(model, inputs, args.out, verify=not args.no_verify)
        path = args.out
    summary["written"] = str(path)
    summary["verified"] = not args.no_verify
    if args.compare_runtimes:
        rep = ex.compare_runtimes(model, inputs, batch_size=args.batch_size)
        summary["runtimes"] = rep.to_dict()
        summary["recommended_runtime"] = rep.best
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(f"wrote {summary['written']} ({'verified' if summary['verified'] else 'not verified'})")
        for row in summary.get("runtimes", {}).get("rows", []):
            state = row["error"] or (f"{row['median_ms']:.3f} ms, outputs "
                                     f"{'match' if row['matches'] else 'DIFFER'}")
            print(f"  {row['runtime']:12s} {state}", file=sys.stdout)
        if "recommended_runtime" in summary:
            print(f"recommended runtime: {summary['recommended_runtime']}")
    return 0
