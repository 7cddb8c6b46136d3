"""Writing a run's output folder atomically, without clobbering files deepshrink did not write.

Files are first written into a temporary sibling folder; only when all are written are they moved
into place (`os.replace`), so an interrupted run leaves either the old folder or the complete new
one. A folder that already holds files other than the ones a run writes is refused.

Example:
    >>> import tempfile, pathlib
    >>> from deepshrink.outputs import write_outputs
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "out"
    >>> write_outputs(d, {"report.json": b"{}"})
    >>> (d / "report.json").read_text()
    '{}'
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import OutputExistsError

# Names a deepshrink run may write; an existing folder holding only these may be refreshed.
RUN_FILES = frozenset(
    {"report.json", "report.html", "report.md", "model.dsz", "model.pt", "model.onnx", "baseline.pt", "recipe.yaml"}
)

Writer = Callable[[Path], None]


def check_output_dir(out: str | Path, *, force: bool = False) -> Path:
    """Raise `OutputExistsError` when `out` exists and holds files a run would not write."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path {str(out)!r} exists and is not a folder")
    if out.is_dir() and not force:
        foreign = sorted(p.name for p in out.iterdir() if p.name not in RUN_FILES)
        if foreign:
            raise OutputExistsError(
                f"output folder {str(out)!r} already holds other files ({', '.join(foreign[:5])}"
                f"{', ...' if len(foreign) > 5 else ''}); choose a new folder or pass --force"
            )
    return out


def write_outputs(out: str | Path, files: dict[str, bytes | str | Writer], *, force: bool = False) -> None:
    """Write `files` (name -> bytes, text, or a function writing to a path) into folder `out` atomically."""
    out = check_output_dir(out, force=force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for name, content in files.items():
            target = tmp / name
            if isinstance(content, bytes):
                target.write_bytes(content)
            elif isinstance(content, str):
                target.write_text(content)
            else:
                content(target)
        if not out.exists():
            os.replace(tmp, out)
            return
        for name in files:
            os.replace(tmp / name, out / name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, suffix: str = ".tmp", parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically, on any error
    it is removed and `path` is left as it was. `parents` creates missing parent folders.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
        >>> with atomic_file(p) as tmp:
        ...     _ = tmp.write_bytes(b"x")
        >>> p.read_bytes()
        b'x'
    """
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
