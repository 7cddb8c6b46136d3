import json

from deepshrink.report import Report, Row
from deepshrink.report.html import to_html


def _report():
    return Report(
        task="toy",
        baseline=Row(name="baseline", size_bytes=1000, params=250, macs=250, accuracy=0.9, latency_ms=1.0),
        steps=[Row(name="1. prune", size_bytes=100, params=25, macs=25, accuracy=0.89, latency_ms=0.5,
                   extras={"sparsity": 0.9})],
        compression_ratio=10.0,
        speedup=2.0,
        skipped=[{"step": "prune", "layer": "fc", "reason": "excluded"}],
        histograms={"fc": {"edges": [-1.0, 0.0, 1.0], "baseline": [3, 4], "final": [0, 1]}},
        layers={"baseline": [{"name": "fc", "params": 250, "macs": 250}], "final": [{"name": "fc", "params": 25, "macs": 25}]},
    )


def test_json_round_trip_is_exact():
    r = _report()
    r.final = r.steps[-1]
    back = Report.from_json(r.to_json())
    assert back == r
    d = json.loads(r.to_json())
    for key in ("accuracy", "size_bytes", "params", "macs", "latency_ms"):
        assert key in d["baseline"] and key in d["final"]
    assert d["compression_ratio"] == 10.0 and d["speedup"] == 2.0


def test_markdown_and_table():
    md = _report().to_markdown()
    assert "| 1. prune |" in md and "10.0x" in md and "Skipped layers" in md


def test_html_is_self_contained_with_plots():
    page = to_html(_report())
    assert page.startswith("<!doctype html>")
    assert page.count("data:image/png;base64,") >= 3  # stages, layers, histograms
    assert "src='http" not in page and "<script" not in page
