"""Per-cell mean-field maps; :data:`THEORIES` maps a cell name to its class."""

from meanfield.cells.base import CellTheory, JacobianMoments, State
from meanfield.cells.gru import GRUTheory
from meanfield.cells.lstm import LSTMTheory
from meanfield.cells.simple import MinimalRNNTheory, VanillaTheory

THEORIES: dict[str, type[CellTheory]] = {
    "lstm": LSTMTheory,
    "gru": GRUTheory,
    "minimalrnn": MinimalRNNTheory,
    "vanilla": VanillaTheory,
}

__all__ = ["THEORIES", "CellTheory", "JacobianMoments", "State"]
