"""Reports: a `Report` dataclass serialized to JSON, Markdown and self-contained HTML with plots.

Example:
    >>> from deepshrink.report import Report, Row
    >>> Report(task="toy").task
    'toy'
"""

from .report import Report, Row, human_bytes

__all__ = ["Report", "Row", "human_bytes"]
