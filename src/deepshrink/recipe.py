"""Recipes: an ordered list of steps, each a registered frozen dataclass config.

A step config is a frozen dataclass registered under a `type` name with `@register_step`. It has an
`apply(model, ctx) -> model` method that returns the transformed model (it may change `model` in
place; `compress` always hands it a copy of the user's model). Recipes round-trip through plain
dicts, JSON and YAML; only registered types are resolved, and an unknown type or field raises a
`RecipeError` that names it.

Example:
    >>> from deepshrink.recipe import Recipe
    >>> r = Recipe.from_list([{"type": "finetune"}])
    >>> r.to_list()
    [{'type': 'finetune'}]
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .errors import RecipeError

_REGISTRY: dict[str, type] = {}

# Modules that register the built-in steps; imported on first look-up so that `import deepshrink`
# stays lean. Each capability keeps its own `steps.py`.
_BUILTIN_STEP_MODULES = (
    "deepshrink.builtin_steps",
    "deepshrink.prune.unstructured.steps",
    "deepshrink.prune.structured.steps",
    "deepshrink.quantize.cluster.steps",
    "deepshrink.quantize.int8.steps",
    "deepshrink.encode.steps",
)
_builtins_loaded = False


def register_step(name: str) -> Callable[[type], type]:
    """Class decorator: register a frozen dataclass step config under `name`.

    Example:
        >>> from dataclasses import dataclass
        >>> @register_step("doc_identity")
        ... @dataclass(frozen=True)
        ... class Identity:
        ...     def apply(self, model, ctx):
        ...         return model
    """

    def deco(cls: type) -> type:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"step {name!r}: {cls.__name__} must be a dataclass")
        if not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise TypeError(f"step {name!r}: {cls.__name__} must be a frozen dataclass")
        if not callable(getattr(cls, "apply", None)):
            raise TypeError(f"step {name!r}: {cls.__name__} needs an apply(model, ctx) method")
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise TypeError(f"step type {name!r} is already registered by {existing.__qualname__}")
        cls.type_name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    for mod in _BUILTIN_STEP_MODULES:
        importlib.import_module(mod)
    _builtins_loaded = True


def step_types() -> dict[str, type]:
    """All registered step types, name -> config class."""
    _load_builtins()
    return dict(_REGISTRY)


@dataclass
class StepContext:
    """What a step sees besides the model.

    Attributes:
        example_inputs: tuple of tensors the model runs on.
        task: the `Task` (data, evaluate, loss) or None.
        original: an untouched copy of the baseline model (teacher for distillation, fidelity).
        skipped: rows ``{"step", "layer", "reason"}`` for layers a step left unchanged.
        row_extras: figures the current step wants in its report row (e.g. sparsity, bits/weight).
        artifact: bytes of the encoded artifact, when the step produced one (e.g. a .dsz file).
        progress: whether long loops may show progress bars.
    """

    example_inputs: tuple
    task: Any = None
    original: nn.Module | None = None
    skipped: list[dict] = field(default_factory=list)
    row_extras: dict[str, Any] = field(default_factory=dict)
    artifact: bytes | None = None
    artifact_suffix: str = ".dsz"
    progress: bool = False
    current_step: str = ""

    def skip(self, layer: str, reason: str) -> None:
        """Record that `layer` was left unchanged by the current step, and why."""
        self.skipped.append({"step": self.current_step, "layer": layer, "reason": reason})

    def require_task(self, *attrs: str):
        """The task, checked to provide `attrs`; raises `TaskError` naming what is missing."""
        from .errors import TaskError

        if self.task is None:
            raise TaskError(f"step {self.current_step!r} needs a task providing {', '.join(attrs)}")
        missing = [a for a in attrs if getattr(self.task, a, None) is None]
        if missing:
            raise TaskError(f"step {self.current_step!r} needs task.{', task.'.join(missing)}")
        return self.task


# ---------------------------------------------------------------------------------------------
# dict <-> config conversion with field checking


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list, Sequence) or hint in (tuple, list):
        return isinstance(value, (tuple, list))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _freeze(value: Any) -> Any:
    """Lists become tuples (hashable, immutable), recursively; dicts keep their keys."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def step_from_dict(d: dict) -> Any:
    """Build a step config from ``{"type": name, **fields}``; raises `RecipeError` naming the problem."""
    if not isinstance(d, dict):
        raise RecipeError(f"a step must be a mapping with a 'type', got {type(d).__name__}: {d!r}")
    if "type" not in d:
        raise RecipeError(f"step {d!r} has no 'type' field")
    name = d["type"]
    types_ = step_types()
    if name not in types_:
        raise RecipeError(f"unknown step type {name!r}; known types: {', '.join(sorted(types_))}")
    cls = types_[name]
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in d.items():
        if key in ("type", "_version"):
            continue
        if key not in fields:
            raise RecipeError(f"step {name!r} has no field {key!r}; its fields: {', '.join(fields) or '(none)'}")
        if not _type_ok(value, hints.get(key, Any)):
            raise RecipeError(f"step {name!r} field {key!r}: expected {hints.get(key)}, got {value!r}")
        kwargs[key] = _freeze(value)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RecipeError(f"step {name!r} is missing required field(s): {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except RecipeError:
        raise
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"step {name!r}: {exc}") from exc


def step_to_dict(step: Any) -> dict:
    """The plain-dict form of a step config (fields equal to their default are kept out)."""
    out: dict[str, Any] = {"type": type(step).type_name}
    for f in dataclasses.fields(step):
        value = getattr(step, f.name)
        default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        if default is not dataclasses.MISSING and _freeze(default) == value:
            continue
        out[f.name] = _plain(value)
    return out


@dataclass(frozen=True)
class Recipe:
    """An ordered tuple of step configs.

    Example:
        >>> r = Recipe.from_list([{"type": "finetune"}])
        >>> Recipe.from_json(r.to_json()) == r
        True
    """

    steps: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "steps", tuple(self.steps))
        for s in self.steps:
            if not hasattr(type(s), "type_name"):
                raise RecipeError(f"{s!r} is not a registered step config")

    @classmethod
    def from_list(cls, steps: Sequence[dict]) -> Recipe:
        if isinstance(steps, dict) and "steps" in steps:
            steps = steps["steps"]
        if not isinstance(steps, (list, tuple)):
            raise RecipeError(f"a recipe is a list of steps (or {{'steps': [...]}}), got {type(steps).__name__}")
        out = []
        for i, d in enumerate(steps):
            try:
                out.append(step_from_dict(d))
            except RecipeError as exc:
                raise RecipeError(f"step {i}: {exc}") from exc
        return cls(tuple(out))

    def to_list(self) -> list[dict]:
        return [step_to_dict(s) for s in self.steps]

    def to_json(self) -> str:
        return json.dumps({"steps": self.to_list()}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecipeError(f"recipe is not valid JSON: {exc}") from exc
        return cls.from_list(data)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump({"steps": self.to_list()}, sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> Recipe:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RecipeError(f"recipe is not valid YAML: {exc}") from exc
        return cls.from_list(data)

    @classmethod
    def load(cls, spec: str | Path) -> Recipe:
        """Load a recipe from a .yaml/.yml/.json file, or by bundled name (e.g. ``"deep_compression"``)."""
        p = Path(spec)
        if p.suffix in (".yaml", ".yml", ".json"):
            if not p.is_file():
                raise RecipeError(f"recipe file {str(p)!r} does not exist")
            text = p.read_text()
            return cls.from_json(text) if p.suffix == ".json" else cls.from_yaml(text)
        from .tasks.recipes import bundled_recipe

        return bundled_recipe(str(spec))

    def save(self, path: str | Path) -> None:
        p = Path(path)
        p.write_text(self.to_json() if p.suffix == ".json" else self.to_yaml())


def as_recipe(recipe: Any) -> Recipe:
    """Accept a Recipe, a list of step dicts/configs, a path or a bundled recipe name."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, (str, Path)):
        return Recipe.load(recipe)
    if isinstance(recipe, (list, tuple)):
        if all(hasattr(type(s), "type_name") for s in recipe):
            return Recipe(tuple(recipe))
        return Recipe.from_list(list(recipe))
    if isinstance(recipe, dict):
        return Recipe.from_list(recipe)
    raise RecipeError(f"cannot use {type(recipe).__name__} as a recipe")
