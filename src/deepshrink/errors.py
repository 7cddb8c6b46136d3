"""The error hierarchy. Every error deepshrink raises on purpose derives from `DeepshrinkError`.

Validation raises one of these (never `assert`), and each message names its cause, so a user can
tell a typo in a recipe from a model that cannot be traced or a corrupt file.

Example:
    >>> from deepshrink.errors import DeepshrinkError, RecipeError
    >>> issubclass(RecipeError, DeepshrinkError)
    True
"""

from __future__ import annotations


class DeepshrinkError(Exception):
    """Base class of every error deepshrink raises on purpose."""


class RecipeError(DeepshrinkError, ValueError):
    """A recipe or step config is invalid: unknown step type, unknown or bad field."""


class TaskError(DeepshrinkError, ValueError):
    """A task cannot be loaded or lacks what a step needs (data, evaluate, loss)."""


class InputError(DeepshrinkError, ValueError):
    """Bad arguments or inputs: wrong shapes, empty data, out-of-range values."""


class ForwardError(DeepshrinkError, RuntimeError):
    """The model's forward pass fails on the given example inputs."""


class TraceError(DeepshrinkError, RuntimeError):
    """The model's computation cannot be captured into a graph."""


class UnsupportedLayerError(DeepshrinkError, TypeError):
    """A layer type is not supported by the requested transform."""


class FormatError(DeepshrinkError, ValueError):
    """A .dsz (or other) file is corrupt, truncated, hostile or of an unsupported version."""


class VerificationError(DeepshrinkError, AssertionError):
    """A transform that should be exact (or within tolerance) changed the outputs beyond tolerance."""


class BackendUnavailableError(DeepshrinkError, RuntimeError):
    """A requested runtime backend (onnxruntime, a quantization engine, ...) is not installed/usable."""


class CalibrationError(DeepshrinkError, ValueError):
    """Calibration data is empty or of the wrong shape."""


class OutputExistsError(DeepshrinkError, FileExistsError):
    """An output path already holds files that deepshrink did not write and will not overwrite."""


__all__ = [
    "BackendUnavailableError",
    "CalibrationError",
    "DeepshrinkError",
    "ForwardError",
    "FormatError",
    "InputError",
    "OutputExistsError",
    "RecipeError",
    "TaskError",
    "TraceError",
    "UnsupportedLayerError",
    "VerificationError",
]
