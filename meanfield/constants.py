"""The trainability constants: the one home of c in the rule "trainable when T ≤ c·ξ_C"
(docs/theory.md §5). Everything that uses c reads it here: the prior (``service/prior.py``),
the critical preset (:mod:`meanfield.critical`), the command line and the benchmarks.

- :data:`MEASURED_C`: c per cell as ``isotune trainability-map`` measured it: LSTM and GRU on
  padded digits with noise padding, 500 training steps
  (``benchmarks/results/trainability_lstm_padded_digits.md``,
  ``benchmarks/results/trainability_gru_padded_digits.md``). The minimalRNN was not measured: it
  takes the LSTM's value, the smaller (stricter) of the two. These are one task and one training
  budget each: c moves with both, which is why a study may set its own ``prior.c``.
- :data:`CRITICAL_C`: the c of the critical recipe (``init: critical``), which gives a memory as
  long as the bridge itself, ξ_C = T. Not a measurement: the conservative end of the rule, where
  every configuration the trainability maps called trainable lies; with the measured c the same
  recipe would give ξ_C = T/13.6, on the maps' edge.
"""

from __future__ import annotations

__all__ = ["CRITICAL_C", "MEASURED_C"]

MEASURED_C: dict[str, float] = {"lstm": 13.6, "gru": 14.7, "minimalrnn": 13.6}
CRITICAL_C = 1.0
