"""Parameter layout of each cell, declared once (docs/theory.md §1–2).

A cell's layout says which gates it has (in PyTorch's order), which gate sets its memory, and which
weight matrices exist: the gates whose rows each one stacks and what it multiplies, its *source*:

- ``"x"``: the input (fan-in n_in, scale sigma_k);
- ``"h"``: the previous state (fan-in n, scale nu_k; Haar-orthogonal for ``weights="orthogonal"``);
- ``"e"``: the minimalRNN's embedding e_t (fan-in n, scale sigma_k) [C18].

Every gate also has one bias, N(mu_k, rho_k²) per unit. Gates listed in one matrix share it (one
product computes all of them); the GRU's candidate n has matrices of its own because its recurrent
term is multiplied by the reset gate. Everything else is derived from :data:`LAYOUTS`: the gate
lists :data:`meanfield.params.CELLS` and :data:`meanfield.params.MEMORY_GATE`, the simulator's
slots (``meanfield._simcells.SLOTS``) and the PyTorch initializer's parameter map
(``workers.models``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["LAYOUTS", "SCALE", "CellLayout", "Matrix", "Source", "fan_in"]

Source = Literal["x", "h", "e"]

#: The hyperparameter that scales a matrix, by its source (docs/theory.md §2).
SCALE: dict[str, str] = {"x": "sigma", "h": "nu", "e": "sigma"}


def fan_in(source: str, n: int, n_in: int) -> int:
    """Width of what a matrix of ``source`` multiplies: n_in for the input, n otherwise."""
    if source not in SCALE:
        raise ValueError(f"unknown source {source!r}; sources are {sorted(SCALE)}")
    return n_in if source == "x" else n


@dataclass(frozen=True)
class Matrix:
    """One weight matrix: ``gates`` stacked in rows (in this order), multiplying ``source``.

    ``slot`` is its name in the simulator (``W``, ``U``…).
    """

    slot: str
    gates: tuple[str, ...]
    source: Source

    @property
    def scale(self) -> str:
        """The hyperparameter setting its entries' scale: ``nu`` (source h) or ``sigma``."""
        return SCALE[self.source]


@dataclass(frozen=True)
class CellLayout:
    """The parameters of one cell: its gates, its memory gate and its weight matrices.

    Checked on creation: matrix slots are distinct, their gates are gates of the cell listed in the
    cell's order, no gate has two matrices of one source, and every gate has at least one matrix.
    """

    cell: str
    gates: tuple[str, ...]
    memory_gate: str | None
    matrices: tuple[Matrix, ...]

    def __post_init__(self) -> None:
        def bad(reason: str) -> ValueError:
            return ValueError(f"layout of {self.cell!r}: {reason}")

        if len(set(self.gates)) != len(self.gates):
            raise bad(f"repeated gate in {self.gates}")
        if self.memory_gate is not None and self.memory_gate not in self.gates:
            raise bad(f"memory gate {self.memory_gate!r} is not one of {self.gates}")
        slots = [m.slot for m in self.matrices]
        if len(set(slots)) != len(slots):
            raise bad(f"repeated slot in {slots}")
        seen: set[tuple[str, str]] = set()
        for m in self.matrices:
            if m.source not in SCALE:
                raise bad(f"slot {m.slot}: unknown source {m.source!r}")
            if not m.gates or any(g not in self.gates for g in m.gates):
                raise bad(f"slot {m.slot}: gates {m.gates} are not among {self.gates}")
            if list(m.gates) != sorted(m.gates, key=self.gates.index):
                raise bad(f"slot {m.slot}: gates {m.gates} are not in the cell's order")
            for g in m.gates:
                if (g, m.source) in seen:
                    raise bad(f"gate {g!r} has two matrices of source {m.source!r}")
                seen.add((g, m.source))
        if missing := [g for g in self.gates if not any(g in m.gates for m in self.matrices)]:
            raise bad(f"gates {missing} have no matrix")

    def matrix(self, slot: str) -> Matrix:
        """The matrix named ``slot``."""
        for m in self.matrices:
            if m.slot == slot:
                return m
        raise KeyError(slot)

    def blocks(self, source: str) -> tuple[str, ...]:
        """The gates that have a matrix of ``source``, matrix after matrix (declaration order)."""
        return tuple(g for m in self.matrices if m.source == source for g in m.gates)


def _layout(
    cell: str, gates: str, memory_gate: str | None, *matrices: tuple[str, str, Source]
) -> CellLayout:
    """Shorthand: gates as a string of one-letter names, matrices as (slot, gates, source)."""
    mats = tuple(Matrix(slot, tuple(gs), src) for slot, gs, src in matrices)
    return CellLayout(cell, tuple(gates), memory_gate, mats)


#: The layout of every cell, gates in PyTorch's order (LSTM i, f, g, o; GRU r, z, n). The order of
#: the matrices is the order in which the tied simulator draws them.
LAYOUTS: dict[str, CellLayout] = {
    layout.cell: layout
    for layout in (
        _layout("lstm", "ifgo", "f", ("W", "ifgo", "x"), ("U", "ifgo", "h")),
        _layout(
            "gru",
            "rzn",
            "z",
            ("W", "rz", "x"),
            ("U", "rz", "h"),
            ("Wn", "n", "x"),
            ("Un", "n", "h"),
        ),
        _layout("minimalrnn", "eu", "u", ("W", "e", "x"), ("V", "u", "e"), ("U", "u", "h")),
        _layout("vanilla", "h", None, ("W", "h", "x"), ("U", "h", "h")),
    )
}
