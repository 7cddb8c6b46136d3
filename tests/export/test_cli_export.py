"""The `deepshrink export` CLI logic (wired by the lead's cli.py to deepshrink.export.cli)."""

from __future__ import annotations

import argparse
import json

import pytest

pytest.importorskip("onnxruntime")


def _args(tmp_path, *extra):
    from deepshrink.export import cli

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return cli, p.parse_args(["--task", "mnist-lenet5", "--out", str(tmp_path / "m.onnx"), *extra])


def test_export_onnx_and_compare_runtimes(tmp_path, capsys):
    cli, args = _args(tmp_path, "--compare-runtimes", "--batch-size", "4", "--json")
    args.compare_runtimes = True
    assert cli.run(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] and (tmp_path / "m.onnx").is_file()
    assert out["recommended_runtime"] in ("eager", "compile", "onnxruntime")


def test_export_int8_qdq(tmp_path, capsys):
    cli, args = _args(tmp_path, "--quantize", "int8")
    assert cli.run(args) == 0
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert "QuantizeLinear" in ops
