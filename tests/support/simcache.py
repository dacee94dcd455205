"""Finite-width simulations remembered on disk: shared by the test processes of one run, and
kept across runs for mutation testing.

``simulate`` is :func:`meanfield.simulate.simulate` itself unless a folder is given (the variable
``ISOTUNE_SIM_CACHE``, else ``folder``): then each result is stored there under a digest of the
call's arguments and read back by later calls with the same arguments, from any process. The
simulation is seeded, so a stored result is the one the call would compute; the mean-field
theory the tests compare it with is computed afresh.

- The suite gives ``tests/test_theory_vs_sim.py`` a folder of the run's own (under pytest's
  temporary root, shared by the xdist workers): three tests read each simulation, and wherever
  xdist runs them it is computed once (``tests/support/shared.py``).
- A mutation run (``make mutate``) sets ``ISOTUNE_SIM_CACHE`` to ``.simcache/``: it changes the
  theory's modules, never the simulation's, and so runs the theory-against-simulation tests in
  seconds instead of minutes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from meanfield import Config, Inputs
from meanfield.simulate import SimulationResult
from meanfield.simulate import simulate as _simulate
from tests.support.shared import once

CACHE_VAR = "ISOTUNE_SIM_CACHE"


def _key(cfg: Config, inputs: Inputs, kwargs: dict[str, Any]) -> str:
    values = {k: float(v) for k, v in sorted(cfg.to_flat_dict().items())}
    extra = {k: (list(v) if isinstance(v, range) else v) for k, v in sorted(kwargs.items())}
    text = repr(
        (cfg.cell, cfg.weights, values, float(inputs.R), inputs.regime, float(inputs.R_ab), extra)
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def simulate(
    cfg: Config, inputs: Inputs, *, folder: Path | None = None, **kwargs: Any
) -> SimulationResult:
    where = os.environ.get(CACHE_VAR) or folder  # a mutation run's folder outlives the run
    if not where:
        return _simulate(cfg, inputs, **kwargs)
    key = _key(cfg, inputs, kwargs)
    return once(key, lambda: _simulate(cfg, inputs, **kwargs), Path(where))
