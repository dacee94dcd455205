"""isotune's mean-field engine: signal propagation in wide random gated RNNs.

Theory of [G19] Gilboa et al., *Dynamical Isometry and a Mean Field Theory of LSTMs and GRUs*
(arXiv:1901.08987) and [C18] Chen, Pennington, Schoenholz, *Gating Enables Signal Propagation in
Recurrent Neural Networks* (ICML 2018), as set out in the project's ``docs/theory.md``. numpy and
scipy only; of isotune it imports just the error base :mod:`contract.errors` (standard library
only).
"""

from meanfield.critical import CriticalResult, critical_init
from meanfield.errors import MeanFieldError
from meanfield.jacobian import Isometry, isometry
from meanfield.params import CELLS, MEMORY_GATE, Config, Inputs
from meanfield.theory import (
    FixedPointResult,
    MemoryCheck,
    fixed_point,
    memory_and_moments,
    memory_check,
    memory_time_scale,
    time_scale,
    trajectory,
)

__all__ = [
    "CELLS",
    "MEMORY_GATE",
    "Config",
    "CriticalResult",
    "FixedPointResult",
    "Inputs",
    "Isometry",
    "MeanFieldError",
    "MemoryCheck",
    "critical_init",
    "fixed_point",
    "isometry",
    "memory_and_moments",
    "memory_check",
    "memory_time_scale",
    "time_scale",
    "trajectory",
]
