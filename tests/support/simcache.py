"""Finite-width simulations remembered on disk, for mutation testing only.

``simulate`` is :func:`meanfield.simulate.simulate` itself unless ``ISOTUNE_SIM_CACHE`` names a
folder: then each result is stored there under a digest of the call's arguments and read back
by later calls with the same arguments. The simulation is seeded, so a stored result is the one
the call would compute; the mean-field theory the tests compare it with is computed afresh. A
mutation run (``make mutate``) changes the theory's modules, never the simulation's, and so runs
the theory-against-simulation tests in seconds instead of minutes. The suite never sets it.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

from meanfield import Config, Inputs
from meanfield.simulate import SimulationResult
from meanfield.simulate import simulate as _simulate

CACHE_VAR = "ISOTUNE_SIM_CACHE"


def _key(cfg: Config, inputs: Inputs, kwargs: dict[str, Any]) -> str:
    values = {k: float(v) for k, v in sorted(cfg.to_flat_dict().items())}
    extra = {k: (list(v) if isinstance(v, range) else v) for k, v in sorted(kwargs.items())}
    text = repr(
        (cfg.cell, cfg.weights, values, float(inputs.R), inputs.regime, float(inputs.R_ab), extra)
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def simulate(cfg: Config, inputs: Inputs, **kwargs: Any) -> SimulationResult:
    folder = os.environ.get(CACHE_VAR)
    if not folder:
        return _simulate(cfg, inputs, **kwargs)
    path = Path(folder) / f"{_key(cfg, inputs, kwargs)}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    result = _simulate(cfg, inputs, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(pickle.dumps(result))
    tmp.replace(path)
    return result
