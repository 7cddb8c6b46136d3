"""Vertices of the captured graph: tensor values and the operations that produce them.

A `Value` is one tensor seen during capture (a model input, a parameter/buffer, or the output of
an op) with its shape. An `OpNode` is one call: a torch function or Tensor method (``target`` is
its normalized name), or a whole leaf module handled by a registered layer rule.

Example:
    >>> v = Value(vid=0, shape=(2, 3), kind="input")
    >>> v.ndim
    2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Value:
    """One tensor of the trace.

    Attributes:
        vid: index in `CapturedGraph.values`.
        shape: its shape when traced.
        kind: "input", "state" (parameter/buffer), "op" (produced by a traced op) or "external"
            (a tensor from outside the trace whose origin is unknown; frozen).
        name: the fully qualified parameter/buffer name for state values.
        base: first slot id of this value in the slot table (set by the dependency builder).
    """

    vid: int
    shape: tuple[int, ...]
    kind: str
    name: str = ""
    base: int = 0
    dtype: str = ""

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def offset(self, dim: int) -> int:
        """First slot id of dimension `dim` (negative dims allowed)."""
        dim = dim % self.ndim
        return self.base + sum(self.shape[:dim])

    def __repr__(self) -> str:  # short, for error messages
        label = self.name or f"%{self.vid}"
        return f"<{self.kind} {label} {list(self.shape)}>"


@dataclass
class OpNode:
    """One captured call.

    Attributes:
        index: position in execution order.
        kind: "function" (torch function / Tensor method) or "module" (a leaf layer).
        target: normalized op name (``"linear"``, ``"add"``, ``"view"``) or the module's class name.
        args / kwargs: the call's arguments with tensors replaced by `Value`s.
        outputs: flat list of output `Value`s.
        out_struct: the output with tensors replaced by `Value`s (tuples kept).
        scope: qualified name of the innermost module running when the call happened.
        module: for kind "module", the module's qualified name.
    """

    index: int
    kind: str
    target: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    outputs: list[Value] = field(default_factory=list)
    out_struct: Any = None
    scope: str = ""
    module: str = ""

    def arg(self, i: int, name: str, default: Any = None) -> Any:
        """Positional argument `i`, else keyword `name`, else `default`."""
        if i < len(self.args):
            return self.args[i]
        return self.kwargs.get(name, default)

    def tensor_args(self) -> list[Value]:
        out: list[Value] = []

        def walk(a: Any) -> None:
            if isinstance(a, Value):
                out.append(a)
            elif isinstance(a, (tuple, list)):
                for b in a:
                    walk(b)
            elif isinstance(a, dict):
                for b in a.values():
                    walk(b)

        walk(self.args)
        walk(self.kwargs)
        return out

    def where(self) -> str:
        return f"{self.target} (op #{self.index}{' in ' + self.scope if self.scope else ''})"
