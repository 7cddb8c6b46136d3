"""The `deepshrink` command: thin shells over the Python API.

Heavy modules are imported only inside the subcommand that needs them.

Example:
    deepshrink demo --out demo-out
    deepshrink compress --task mnist --recipe deep_compression --out run1
    deepshrink profile --task mnist-lenet5
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .errors import DeepshrinkError

log = logging.getLogger("deepshrink")


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def _run(task_spec: str, recipe_spec: str, out: str, *, force: bool, latency_batch: int, title: str) -> int:
    import torch

    from .api import compress
    from .outputs import check_output_dir, write_outputs
    from .recipe import as_recipe
    from .report.html import to_html
    from .tasks import load_task

    check_output_dir(out, force=force)  # refuse early, before minutes of work
    recipe = as_recipe(recipe_spec)
    t0 = time.perf_counter()
    print(f"[deepshrink] {title}: loading task {task_spec!r}", flush=True)
    task = load_task(task_spec)
    print(f"[deepshrink] running {len(recipe.steps)} step(s): "
          f"{', '.join(type(s).type_name for s in recipe.steps) or '(none)'}", flush=True)
    result = compress(task.model, task.example_inputs, recipe, task=task, latency_batch=latency_batch, progress=True)
    report = result.report

    def save_baseline(path: Path) -> None:
        torch.save(task.model.state_dict(), path)

    files: dict = {
        "report.json": report.to_json(),
        "report.md": report.to_markdown(),
        "report.html": to_html(report),
        "recipe.yaml": recipe.to_yaml(),
        "baseline.pt": save_baseline,
    }
    if result.artifact is not None:
        files["model" + result.artifact_suffix] = result.artifact
    else:
        from .encode import dumps

        files["model.dsz"] = dumps(result.model)
    write_outputs(out, files, force=force)
    print()
    _print_table(report.table())
    print()
    for line in report.summary_lines():
        print(line)
    for w in report.warnings:
        print(f"WARNING: {w}")
    if report.skipped:
        print(f"{len(report.skipped)} layer(s) skipped; see report.html")
    print(f"\nwrote {out}/ ({', '.join(sorted(files))}) in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return _run("mnist", "deep_compression", args.out, force=args.force, latency_batch=32,
                title="demo: Deep Compression of LeNet-300-100 on the bundled real MNIST")


def cmd_compress(args: argparse.Namespace) -> int:
    return _run(args.task, args.recipe, args.out, force=args.force, latency_batch=args.latency_batch, title="compress")


def cmd_profile(args: argparse.Namespace) -> int:
    import json

    from .measure import profile
    from .report import human_bytes
    from .tasks import load_task

    task = load_task(args.task)
    p = profile(task.model, task.example_inputs)
    if args.json:
        print(json.dumps(p.to_dict(), indent=2))
        return 0
    rows = [["layer", "type", "params", "MACs", "fp32 bytes"]]
    rows += [[r.name, r.type, f"{r.params:,}", f"{r.macs:,}", human_bytes(r.size_bytes)] for r in p.layers]
    rows.append(["TOTAL", "", f"{p.params:,}", f"{p.macs:,}", human_bytes(p.size_bytes)])
    _print_table(rows)
    print()
    kinds = [["kind", "params share", "MACs share"]]
    kinds += [[k, f"{v['params_share']:.1%}", f"{v['macs_share']:.1%}"] for k, v in sorted(p.by_kind().items())]
    _print_table(kinds)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepshrink", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each step does")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="Deep Compression of LeNet-300-100 on the bundled real MNIST")
    p.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--force", action="store_true", help="write into a folder that holds other files")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("compress", help="run a recipe on a task's model")
    p.add_argument("--task", required=True, help="bundled name (mnist, mnist-lenet5), a .py file or module:function")
    p.add_argument("--recipe", required=True, help="a .yaml/.json recipe or a bundled recipe name")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--latency-batch", type=int, default=32, help="larger batch size to time besides 1")
    p.add_argument("--force", action="store_true", help="write into a folder that holds other files")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("profile", help="per-layer parameters, MACs and bytes")
    p.add_argument("--task", required=True, help="bundled name, a .py file or module:function")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_profile)

    try:
        from .export import cli as export_cli
    except ImportError:
        export_cli = None
    if export_cli is not None and hasattr(export_cli, "add_arguments"):
        p = sub.add_parser("export", help="export a task's model to ONNX / torch.export, verified")
        export_cli.add_arguments(p)
        p.set_defaults(func=export_cli.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except DeepshrinkError as exc:
        print(f"deepshrink: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
