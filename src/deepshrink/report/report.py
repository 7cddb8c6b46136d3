"""The `Report` of a compression run: baseline, one row per step, final, and what was skipped.

It serializes to JSON (round trip exact), Markdown and a self-contained HTML page with plots
(`deepshrink.report.html`). The JSON holds at least ``baseline`` and ``final`` rows, each with
``accuracy`` (if a task evaluates), ``size_bytes``, ``params``, ``macs``, ``latency_ms``, plus
``compression_ratio`` (baseline fp32 bytes / final artifact bytes) and ``speedup``.

Example:
    >>> from deepshrink.report import Report, Row
    >>> r = Report(task="toy", baseline=Row(name="baseline", size_bytes=100, params=25, macs=25))
    >>> Report.from_json(r.to_json()) == r
    True
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """Figures of the model after one step (or the baseline), all measured.

    size_bytes: bytes of the step's artifact — for the baseline the fp32 state_dict bytes; after a
        step that encodes, the encoded file's bytes; otherwise `artifact` says what was measured.
    latency_ms / latency_p90_ms: batch-1 CPU latency; latency_batch_ms at `latency_batch` rows.
    """

    name: str
    size_bytes: int = 0
    params: int = 0
    macs: int = 0
    accuracy: float | None = None
    latency_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_batch_ms: float | None = None
    latency_batch: int | None = None
    seconds: float = 0.0
    artifact: str = ""
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    """Everything a run measured. `steps` holds one `Row` per recipe step, in order."""

    task: str = ""
    baseline: Row | None = None
    steps: list[Row] = field(default_factory=list)
    final: Row | None = None
    compression_ratio: float | None = None
    speedup: float | None = None
    speedup_batch: float | None = None
    metric_name: str = "accuracy"
    recipe: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, list[dict]] = field(default_factory=dict)
    histograms: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    # -- serialization -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        d = dict(d)
        for key in ("baseline", "final"):
            if d.get(key) is not None:
                d[key] = Row(**d[key])
        d["steps"] = [Row(**r) for r in d.get("steps", [])]
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=_jsonable)

    @classmethod
    def from_json(cls, text: str) -> Report:
        return cls.from_dict(json.loads(text))

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load_json(cls, path: str | Path) -> Report:
        return cls.from_json(Path(path).read_text())

    # -- text ----------------------------------------------------------------------------------
    def rows(self) -> list[Row]:
        """Baseline then every step row."""
        return ([self.baseline] if self.baseline else []) + list(self.steps)

    def table(self) -> list[list[str]]:
        """The size/latency/metric table, header first, as strings (console and Markdown)."""
        base = self.baseline.size_bytes if self.baseline else 0
        head = ["stage", "size", "ratio", "params", "MACs", self.metric_name, "latency b1 (ms)"]
        if any(r.latency_batch_ms is not None for r in self.rows()):
            n = next(r.latency_batch for r in self.rows() if r.latency_batch)
            head.append(f"latency b{n} (ms)")
        out = [head]
        for r in self.rows():
            line = [
                r.name,
                human_bytes(r.size_bytes),
                f"{base / r.size_bytes:.1f}x" if r.size_bytes else "-",
                f"{r.params:,}",
                f"{r.macs:,}",
                "-" if r.accuracy is None else f"{r.accuracy:.4f}",
                "-" if r.latency_ms is None else f"{r.latency_ms:.3f}",
            ]
            if len(head) == 8:
                line.append("-" if r.latency_batch_ms is None else f"{r.latency_batch_ms:.3f}")
            out.append(line)
        return out

    def summary_lines(self) -> list[str]:
        out = []
        if self.compression_ratio is not None:
            out.append(f"compression ratio (baseline fp32 bytes / final artifact bytes): {self.compression_ratio:.1f}x")
        if self.speedup is not None:
            out.append(f"measured speedup, batch 1: {self.speedup:.2f}x")
        if self.speedup_batch is not None:
            out.append(f"measured speedup, batch {self.settings.get('latency_batch')}: {self.speedup_batch:.2f}x")
        if self.baseline and self.final and self.baseline.accuracy is not None and self.final.accuracy is not None:
            d = (self.final.accuracy - self.baseline.accuracy) * 100
            out.append(f"{self.metric_name}: {self.baseline.accuracy:.4f} -> {self.final.accuracy:.4f} ({d:+.2f} points)")
        return out

    def to_markdown(self) -> str:
        t = self.table()
        lines = [f"# deepshrink report: {self.task}", ""]
        lines += [f"- {s}" for s in self.summary_lines()]
        lines += ["", "| " + " | ".join(t[0]) + " |", "|" + "---|" * len(t[0])]
        lines += ["| " + " | ".join(r) + " |" for r in t[1:]]
        if self.warnings:
            lines += ["", "## Warnings", ""] + [f"- {w}" for w in self.warnings]
        if self.skipped:
            lines += ["", "## Skipped layers", "", "| step | layer | reason |", "|---|---|---|"]
            lines += [f"| {s.get('step', '')} | {s.get('layer', '')} | {s.get('reason', '')} |" for s in self.skipped]
        m = self.machine
        lines += ["", f"Measured on {m.get('cpu', '?')} ({m.get('cores', '?')} cores), "
                  f"{self.settings.get('threads', '?')} threads, torch {m.get('torch', '?')}."]
        return "\n".join(lines) + "\n"


def _jsonable(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def human_bytes(n: int | float) -> str:
    """`1234567` -> `'1.18 MiB'`."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"
