"""Loading a task by bundled name, from a Python file, or from `module:function`.

A task file either defines ``get_task()`` (or ``task()``) returning a `Task`, or exposes the
pieces at module level: ``model`` (or ``build_model()``), ``example_inputs`` and optionally
``train_data``, ``calib_data``, ``eval_data``, ``evaluate``, ``loss``.

Example:
    >>> from deepshrink.tasks.loader import load_task
    >>> load_task("mnist").name          # doctest: +SKIP
    'mnist-lenet300'
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import TaskError
from ..inputs import as_inputs
from .base import Task

BUNDLED = {
    "mnist": ("lenet300",),
    "mnist-lenet300": ("lenet300",),
    "mnist-lenet5": ("lenet5",),
}

_OPTIONAL = ("train_data", "calib_data", "eval_data", "evaluate", "loss")


def bundled_task(name: str) -> Task:
    from .mnist import mnist_task

    return mnist_task(*BUNDLED[name])


def _from_namespace(ns: Any, origin: str) -> Task:
    for fn_name in ("get_task", "task"):
        fn = getattr(ns, fn_name, None)
        if callable(fn):
            return _check(fn(), f"{origin}:{fn_name}()")
    model = getattr(ns, "model", None)
    if model is None and callable(getattr(ns, "build_model", None)):
        model = ns.build_model()
    missing = [n for n, v in (("model (or build_model)", model), ("example_inputs", getattr(ns, "example_inputs", None))) if v is None]
    if missing:
        raise TaskError(
            f"task {origin} defines neither get_task() nor the needed names; missing: {', '.join(missing)}"
        )
    kwargs = {k: getattr(ns, k, None) for k in _OPTIONAL}
    name = getattr(ns, "name", None) or Path(origin).stem
    return _check(Task(name=name, model=model, example_inputs=ns.example_inputs, **kwargs), origin)


def _check(task: Any, origin: str) -> Task:
    if not isinstance(task, Task):
        raise TaskError(f"{origin} returned {type(task).__name__}, expected deepshrink.tasks.Task")
    if not isinstance(task.model, nn.Module):
        raise TaskError(f"{origin}: task.model is {type(task.model).__name__}, expected a torch.nn.Module")
    try:
        task.example_inputs = as_inputs(task.example_inputs)
    except Exception as exc:
        raise TaskError(f"{origin}: bad example_inputs: {exc}") from exc
    if task.evaluate is not None and not callable(task.evaluate):
        raise TaskError(f"{origin}: task.evaluate must be callable")
    return task


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise TaskError(f"task file {str(path)!r} does not exist")
    mod_name = f"_deepshrink_task_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise TaskError(f"cannot import task file {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(mod_name, None)
        raise TaskError(f"task file {str(path)!r} failed to import: {exc}") from exc
    return module


def load_task(spec: str | Task) -> Task:
    """A `Task` from a bundled name ("mnist", "mnist-lenet5"), a ``.py`` file, or ``module:function``."""
    if isinstance(spec, Task):
        return _check(spec, spec.name)
    if not isinstance(spec, str):
        raise TaskError(f"a task spec is a string, got {type(spec).__name__}")
    if spec in BUNDLED:
        return bundled_task(spec)
    file_part, _, fn_part = spec.partition(":") if not Path(spec).is_file() else (spec, "", "")
    if file_part.endswith(".py"):
        module = _load_file(Path(file_part))
    elif fn_part:
        try:
            module = importlib.import_module(file_part)
        except ImportError as exc:
            raise TaskError(f"cannot import task module {file_part!r}: {exc}") from exc
    else:
        raise TaskError(
            f"unknown task {spec!r}: use a bundled name ({', '.join(BUNDLED)}), a .py file or module:function"
        )
    if fn_part:
        fn = getattr(module, fn_part, None)
        if not callable(fn):
            raise TaskError(f"task {spec!r}: {file_part} has no function {fn_part!r}")
        return _check(fn(), spec)
    return _from_namespace(module, spec)
