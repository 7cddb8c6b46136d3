"""Bundled demo tasks and the task loader.

Example:
    >>> from deepshrink.tasks import load_task
    >>> task = load_task("mnist")   # doctest: +SKIP
"""

from .base import Task
from .loader import load_task

__all__ = ["Task", "load_task"]
