"""Bundled recipes, stored as YAML beside this file.

Example:
    >>> from deepshrink.tasks.recipes import bundled_names
    >>> "deep_compression" in bundled_names()   # doctest: +SKIP
    True
"""

from __future__ import annotations

from pathlib import Path

from ...errors import RecipeError

_HERE = Path(__file__).parent


def bundled_names() -> list[str]:
    return sorted(p.stem for p in _HERE.glob("*.yaml"))


def bundled_recipe(name: str):
    from ...recipe import Recipe

    path = _HERE / f"{name}.yaml"
    if not path.is_file():
        raise RecipeError(f"unknown recipe {name!r}: not a file and not bundled ({', '.join(bundled_names())})")
    return Recipe.from_yaml(path.read_text())
