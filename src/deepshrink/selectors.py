"""Selecting layers by fully qualified name, `re:` regex, or module type name — never by object.

Selectors are strings so that recipes can be saved:

- ``"features.0"`` — an exact fully qualified module name;
- ``"re:.*fc\\d"`` — a regex matched (``re.fullmatch``) against fully qualified names;
- ``"type:Conv2d"`` — every module whose class name is ``Conv2d``.

Precedence: `exclude` wins over `include`; per-layer overrides are resolved first-match-wins in
the order given.

Example:
    >>> from torch import nn
    >>> from deepshrink.selectors import select
    >>> m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> select(m, include=["type:Linear"], exclude=["2"])
    ['0']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from torch import nn

from .errors import InputError


def matches(selector: str, name: str, module: nn.Module | None = None) -> bool:
    """True when `selector` selects the module called `name`."""
    if selector.startswith("re:"):
        return re.fullmatch(selector[3:], name) is not None
    if selector.startswith("type:"):
        return module is not None and type(module).__name__ == selector[5:]
    return name == selector


def _check(selectors: Iterable[str], what: str) -> list[str]:
    if isinstance(selectors, str):
        selectors = [selectors]
    out = []
    for s in selectors:
        if not isinstance(s, str):
            raise InputError(f"{what} selectors must be strings (name, 're:regex' or 'type:Class'), got {s!r}")
        if s.startswith("re:"):
            try:
                re.compile(s[3:])
            except re.error as exc:
                raise InputError(f"bad regex in {what} selector {s!r}: {exc}") from exc
        out.append(s)
    return out


def select(
    model: nn.Module,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    *,
    candidates: Iterable[str] | None = None,
    strict: bool = True,
) -> list[str]:
    """Names of the modules of `model` selected by `include` minus `exclude`.

    Args:
        model: the model whose named modules are searched.
        include: selectors; None selects every candidate.
        exclude: selectors removed from the result (exclude wins).
        candidates: restrict to these names (e.g. the prunable layers).
        strict: raise `InputError` when an include/exclude selector matches no module at all, so a
            typo in a recipe is not silently ignored.
    """
    inc = None if include is None else _check(include, "include")
    exc = _check(exclude, "exclude")
    modules = dict(model.named_modules())
    names = list(modules) if candidates is None else [n for n in candidates if n in modules]
    if strict:
        for s in (inc or []) + exc:
            if not any(matches(s, n, modules[n]) for n in modules):
                raise InputError(f"selector {s!r} matches no module of {type(model).__name__}")
    chosen = []
    for n in names:
        if inc is not None and not any(matches(s, n, modules[n]) for s in inc):
            continue
        if any(matches(s, n, modules[n]) for s in exc):
            continue
        chosen.append(n)
    return chosen


def override_for(name: str, module: nn.Module | None, overrides: dict | Sequence | None, default):
    """The first override whose selector matches `name` (dict or list of pairs), else `default`."""
    if not overrides:
        return default
    pairs = overrides.items() if isinstance(overrides, dict) else overrides
    for sel, value in pairs:
        if matches(sel, name, module):
            return value
    return default
