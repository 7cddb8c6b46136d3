"""Dependencies between channels: every tensor dimension is a row of *slots* (one per index) and
each op rule links slots that must be removed together.

A rule gets a `RuleContext` and the `OpNode`; it calls `link` (slot i of one dim is slot j of
another: identity, block or explicit index maps), `freeze` (these slots may never be removed:
model inputs/outputs, kernel sizes, unknown ops) and `inexact` (removing these is not exact even
when the removed channels are zero, e.g. LayerNorm statistics or a softmax over that dim).
Connected slots form a *class*; a class that reaches a parameter and nothing frozen can be pruned.

Teaching deepshrink a new op or layer takes a few lines:

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Scale(nn.Module):            # y = x * w over channel dim 1
    ...     def __init__(self, c):
    ...         super().__init__()
    ...         self.w = nn.Parameter(torch.ones(c))
    ...     def forward(self, x):
    ...         return x * self.w[:, None, None]
    >>> @register_layer(Scale)
    ... def _scale_rule(ctx, node, module):
    ...     x, y, w = node.args[0], node.outputs[0], ctx.param(module, "w")
    ...     ctx.identity(x, y)            # same shape: every dim maps 1:1
    ...     ctx.link(w, 0, y, 1)          # w[c] belongs to channel c
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from .node import OpNode, Value

log = logging.getLogger(__name__)

OpRule = Callable[["RuleContext", OpNode], None]
LayerRule = Callable[["RuleContext", OpNode, nn.Module], None]

_OP_RULES: dict[str, OpRule] = {}
_LAYER_RULES: dict[type, LayerRule] = {}


def register_op(*names: str) -> Callable[[OpRule], OpRule]:
    """Decorator: the rule for torch functions / Tensor methods named `names` (e.g. ``"add"``)."""

    def deco(fn: OpRule) -> OpRule:
        for n in names:
            _OP_RULES[n] = fn
        return fn

    return deco


def register_layer(*types: type) -> Callable[[LayerRule], LayerRule]:
    """Decorator: record modules of `types` as one node handled by `rule(ctx, node, module)`.

    Inside the rule, ``node.args``/``node.kwargs`` hold the forward's inputs as `Value`s,
    ``node.outputs`` the flat outputs, and ``ctx.param(module, "weight")`` a parameter's `Value`.
    """

    def deco(fn: LayerRule) -> LayerRule:
        for t in types:
            _LAYER_RULES[t] = fn
        return fn

    return deco


def op_rule(name: str) -> OpRule | None:
    _load_builtin_rules()
    return _OP_RULES.get(name)


def layer_rule(module: nn.Module) -> LayerRule | None:
    _load_builtin_rules()
    for t in type(module).__mro__:
        if t in _LAYER_RULES:
            return _LAYER_RULES[t]
    return None


def layer_rule_types() -> tuple[type, ...]:
    _load_builtin_rules()
    return tuple(_LAYER_RULES)


_loaded = False


def _load_builtin_rules() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import rules, rules_layers  # noqa: F401  (registers the built-in rules)


class RuleContext:
    """Collects slot links, frozen slots and inexact slots while the rules run."""

    def __init__(self, values: list[Value], model: nn.Module, state: dict[str, Value]):
        self.values = values
        self.model = model
        self.state = state
        self.n_slots = 0
        for v in values:
            v.base = self.n_slots
            self.n_slots += sum(v.shape)
        self._a: list[np.ndarray] = []
        self._b: list[np.ndarray] = []
        self.frozen = np.zeros(self.n_slots, dtype=bool)
        self.touched = np.zeros(self.n_slots, dtype=bool)
        self.inexact_mask = np.zeros(self.n_slots, dtype=bool)
        self.freeze_reasons: list[tuple[np.ndarray, str]] = []
        self.node: OpNode | None = None

    # -- slots ---------------------------------------------------------------------------------
    @staticmethod
    def slots(v: Value, dim: int) -> np.ndarray:
        dim = dim % v.ndim
        return np.arange(v.offset(dim), v.offset(dim) + v.shape[dim], dtype=np.int64)

    def link_slots(self, a: np.ndarray, b: np.ndarray) -> None:
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        if a.shape != b.shape:
            raise ValueError(f"link: {a.shape} vs {b.shape} slots")
        self._a.append(a)
        self._b.append(b)
        self.touched[a] = True
        self.touched[b] = True

    def link(self, a: Value, da: int, b: Value, db: int, *, a_idx=None, b_idx=None) -> None:
        """Link dim `da` of `a` with dim `db` of `b`.

        With no index maps the dims must have the same size (identity). ``a_idx``/``b_idx`` are
        index arrays into each dim (same length), e.g. a block map ``b_idx = arange(n) // k``.
        """
        sa, sb = self.slots(a, da), self.slots(b, db)
        ia = np.arange(len(sa)) if a_idx is None else np.asarray(a_idx, dtype=np.int64)
        ib = np.arange(len(sb)) if b_idx is None else np.asarray(b_idx, dtype=np.int64)
        if len(ia) != len(ib):
            raise ValueError(f"cannot link {a} dim {da} with {b} dim {db}: sizes differ")
        self.link_slots(sa[ia], sb[ib])

    def identity(self, a: Value, b: Value) -> None:
        """Link two same-shaped values dim by dim."""
        for d in range(min(a.ndim, b.ndim)):
            if a.shape[d] == b.shape[d]:
                self.link(a, d, b, d)

    def broadcast(self, out: Value, inputs: list[Any]) -> None:
        """Elementwise op: link each input dim to the output dim it broadcasts to (right-aligned)."""
        for a in inputs:
            if not isinstance(a, Value):
                continue
            shift = out.ndim - a.ndim
            for d in range(a.ndim):
                od = d + shift
                if od < 0:
                    self.freeze(a, d, "broadcast beyond output rank")
                elif a.shape[d] == out.shape[od]:
                    self.link(a, d, out, od)
                elif a.shape[d] != 1:
                    self.freeze(a, d, "shape mismatch in elementwise op")

    def freeze(self, v: Value, dim: int | None = None, reason: str = "") -> None:
        """Mark every slot of `v` (or of one dim) as never removable."""
        dims = range(v.ndim) if dim is None else [dim % v.ndim]
        for d in dims:
            s = self.slots(v, d)
            self.frozen[s] = True
            self.touched[s] = True
            if reason and len(s):
                where = self.node.where() if self.node is not None else ""
                self.freeze_reasons.append((s, f"{reason}{' at ' + where if where else ''}"))

    def freeze_all(self, node: OpNode, reason: str) -> None:
        for v in node.tensor_args() + node.outputs:
            self.freeze(v, None, reason)

    def inexact(self, v: Value, dim: int) -> None:
        """Removing channels of this dim changes the result even when they are zero."""
        self.inexact_mask[self.slots(v, dim)] = True

    def param(self, module: nn.Module, name: str) -> Value | None:
        """The `Value` of parameter/buffer `name` of `module` (None when it is None)."""
        t = getattr(module, name, None)
        if t is None:
            return None
        for full, v in self.state.items():
            if _resolve(self.model, full) is t:
                return v
        return None

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._a:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(self._a), np.concatenate(self._b)


def _resolve(model: nn.Module, name: str) -> Any:
    obj: Any = model
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj
