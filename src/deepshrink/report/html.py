"""A self-contained HTML report: tables plus matplotlib plots embedded as PNG data URIs.

Example:
    >>> from deepshrink.report import Report, Row
    >>> from deepshrink.report.html import to_html
    >>> "<html" in to_html(Report(task="toy", baseline=Row(name="baseline", size_bytes=1)))
    True
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from .report import Report, human_bytes


def _fig_to_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_stages(report: Report) -> str | None:
    rows = report.rows()
    if not rows:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    names = [r.name for r in rows]
    axes[0].bar(names, [r.size_bytes / 1024 for r in rows], color="#4c72b0")
    axes[0].set_yscale("log")
    axes[0].set_title("artifact size (KiB, log)")
    lat = [r.latency_ms or 0 for r in rows]
    axes[1].bar(names, lat, color="#55a868")
    axes[1].set_title("latency batch 1 (ms)")
    acc = [r.accuracy if r.accuracy is not None else float("nan") for r in rows]
    axes[2].plot(names, acc, "o-", color="#c44e52")
    axes[2].set_title(report.metric_name)
    for ax in axes:
        ax.tick_params(axis="x", rotation=30, labelsize=8)
    return _fig_to_uri(fig)


def plot_layers(report: Report) -> str | None:
    base = report.layers.get("baseline") or []
    if not base:
        return None
    final = {r["name"]: r for r in report.layers.get("final") or []}
    plt = _plt()
    names = [r["name"] for r in base]
    x = range(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.4))
    for ax, key, title in ((axes[0], "params", "parameters per layer"), (axes[1], "macs", "MACs per layer")):
        ax.bar([i - 0.2 for i in x], [r[key] for r in base], width=0.4, label="baseline", color="#8c8c8c")
        ax.bar([i + 0.2 for i in x], [final.get(n, {}).get(key, 0) for n in names], width=0.4, label="final", color="#4c72b0")
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
        ax.set_title(title)
        ax.set_yscale("symlog")
        ax.legend(fontsize=8)
    return _fig_to_uri(fig)


def plot_histograms(report: Report) -> str | None:
    hists = report.histograms
    if not hists:
        return None
    plt = _plt()
    n = len(hists)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, h) in zip(axes.flat, hists.items(), strict=False):
        edges = h["edges"]
        centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=False)]
        width = edges[1] - edges[0]
        ax.bar(centers, h["baseline"], width=width, color="#8c8c8c", alpha=0.6, label="baseline")
        if "final" in h:
            ax.bar(centers, h["final"], width=width, color="#4c72b0", alpha=0.6, label="final")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle("weight values per layer (log count)", fontsize=10)
    return _fig_to_uri(fig)


def _table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv(d: dict[str, Any]) -> str:
    return _table([["", ""]] + [[str(k), str(v)] for k, v in d.items()])


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
img{max-width:100%}.warn{color:#a33}
"""


def to_html(report: Report) -> str:
    """The report as one self-contained HTML page (no external files or scripts)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>deepshrink: {html.escape(report.task)}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>deepshrink report: {html.escape(report.task)}</h1>"]
    parts += [f"<p><b>{html.escape(s)}</b></p>" for s in report.summary_lines()]
    parts.append("<h2>Baseline and each step</h2>" + _table(report.table()))
    extras = [r for r in report.rows() if r.extras]
    if extras:
        parts.append("<h3>Step details</h3>")
        for r in extras:
            flat = {k: v for k, v in r.extras.items() if not isinstance(v, (dict, list))}
            if flat:
                parts.append(f"<h4>{html.escape(r.name)}</h4>" + _kv(flat))
    for plot in (plot_stages(report), plot_layers(report), plot_histograms(report)):
        if plot:
            parts.append(f"<img src='{plot}'>")
    if report.warnings:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li class='warn'>{html.escape(w)}</li>" for w in report.warnings) + "</ul>")
    if report.skipped:
        rows = [["step", "layer", "reason"]] + [[s.get("step", ""), s.get("layer", ""), s.get("reason", "")] for s in report.skipped]
        parts.append("<h2>Skipped layers</h2>" + _table(rows))
    parts.append("<h2>Recipe</h2><pre>" + html.escape("\n".join(str(s) for s in report.recipe)) + "</pre>")
    parts.append("<h2>Machine and settings</h2>" + _kv({**report.machine, **report.settings}))
    if report.baseline:
        parts.append(f"<p>Baseline fp32 size {human_bytes(report.baseline.size_bytes)}.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
