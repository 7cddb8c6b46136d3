"""A coupled channel group: the unit of structural pruning.

Every class of a group is one channel / neuron / head / hidden unit: the set of parameter slices
(tensor name, dim, indices) that must be removed together. The classes of a group touch the same
parameter dims (e.g. the 64 output filters of ``conv1`` together with ``bn1`` and the input channels
of ``conv2``). `Group.check` validates a removal before anything is changed.

Example:
    >>> import numpy as np
    >>> g = Group(gid=0, members={("fc1.weight", 0): [np.array([0]), np.array([1])]}, n_classes=2)
    >>> g.layers
    ['fc1']
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError


@dataclass(eq=False)
class Group:
    """One coupled group.

    Attributes:
        gid: index in the graph's group list.
        members: ``(state name, dim) -> [indices of class 0, indices of class 1, ...]``.
        n_classes: number of classes (channels/heads/units).
        labels: the class labels (slot-graph component ids), one per class.
        frozen: per class, True when it may never be removed.
        reason: why the group (or its frozen classes) cannot be pruned.
        inexact: True when removing even all-zero channels changes outputs (norm statistics...).
        kind: "channels", "heads"/"blocks" (several indices per class in a weight), "hidden" (reaches
            an embedding table), "recurrent" (LSTM/GRU units).
    """

    gid: int
    members: dict[tuple[str, int], list[np.ndarray]]
    n_classes: int
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    frozen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    reason: str = ""
    inexact: bool = False
    kind: str = "channels"

    def __post_init__(self) -> None:
        if len(self.frozen) != self.n_classes:
            self.frozen = np.zeros(self.n_classes, dtype=bool)

    @property
    def layers(self) -> list[str]:
        """Module names owning the group's tensors, in first-seen order."""
        out: list[str] = []
        for name, _ in self.members:
            mod = name.rsplit(".", 1)[0] if "." in name else ""
            if mod not in out:
                out.append(mod)
        return out

    @property
    def prunable(self) -> bool:
        return not self.reason and bool((~self.frozen).any())

    @property
    def n_prunable(self) -> int:
        return int((~self.frozen).sum())

    def describe(self) -> str:
        lay = self.layers
        head = ", ".join(lay[:4]) + (f" (+{len(lay) - 4} more)" if len(lay) > 4 else "")
        return f"group {self.gid} [{self.kind}, {self.n_classes}] {head}"

    def check(self, remove: np.ndarray) -> None:
        """Raise `InputError` if removing classes `remove` is not legal for this group."""
        remove = np.asarray(remove, dtype=np.int64)
        if len(remove) and (remove.min() < 0 or remove.max() >= self.n_classes):
            raise InputError(f"{self.describe()}: class index out of range")
        if self.frozen[remove].any():
            raise InputError(f"{self.describe()}: cannot remove frozen classes ({self.reason or 'frozen'})")
        if len(np.unique(remove)) >= self.n_classes:
            raise InputError(f"{self.describe()}: removing every channel would empty the layer")

    def removed_indices(self, remove: np.ndarray) -> dict[tuple[str, int], np.ndarray]:
        """For each member (tensor, dim), the indices that go when classes `remove` are removed.

        A tensor dim can be shared by several groups (the input channels of a conv after a
        ``cat``), so the pruner merges these per dim before slicing.
        """
        out = {}
        for key, per_class in self.members.items():
            parts = [per_class[int(c)] for c in remove]
            out[key] = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return out
