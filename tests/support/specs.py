"""Study specifications the tests create. Each builder returns a new dict (changes on top), so a
test may change what it got without touching anyone else's."""

from __future__ import annotations

import copy

__all__ = ["API", "GRU", "TRAINING", "api", "faults", "gru", "prior", "trained"]

#: The REST tests' study (in-process app): an LSTM on ``copy``, four kinds of parameters.
API = {
    "name": "s1",
    "cell": "lstm",
    "task": {"name": "copy", "T": 20},
    "space": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "mu_f": {"type": "float", "low": 0.0, "high": 8.0},
        "hidden": {"type": "int", "low": 16, "high": 64, "step": 16},
        "optimizer": {"type": "categorical", "choices": ["adam", "rmsprop"]},
    },
    "sampler": "random",
    "pruner": "median",
    "budget": 6,
    "seed": 1,
    # the API's own behaviour; the prior (the default here: mu_f is searched) is test_prior's
    "prior": {"mode": "off"},
}

#: The real-server tests' study: a GRU on ``adding`` with one parameter.
GRU = {
    "name": "real",
    "cell": "gru",
    "task": {"name": "adding", "T": 10},
    "space": {"mu_z": {"type": "float", "low": 0.0, "high": 6.0}},
    "sampler": "tpe",
    "budget": 40,
    "prior": {"mode": "off"},
}

#: Training settings small enough for real workers to train in seconds on one CPU thread.
TRAINING = {"hidden": 16, "batch_size": 16, "steps": 200, "eval_every": 20, "eval_size": 64}

#: The prior tests' task and space (``service.prior``).
PRIOR_TASK = {"name": "padded_digits", "T": 100, "options": {"padding": "noise"}}
PRIOR_SPACE = {
    "mu_f": {"type": "float", "low": -2.0, "high": 8.0},
    "nu": {"type": "float", "low": 0.3, "high": 3.0},
    "sigma": {"type": "float", "low": 0.3, "high": 2.0},
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
}


def _with(base: dict, changes: dict) -> dict:
    return {**copy.deepcopy(base), **changes}


def api(**changes: object) -> dict:
    """:data:`API` with ``changes``."""
    return _with(API, changes)


def gru(**changes: object) -> dict:
    """:data:`GRU` with ``changes``."""
    return _with(GRU, changes)


def trained(name: str, **changes: object) -> dict:
    """A study real workers train: an LSTM on ``padded_digits`` (T = 20), restricted by the
    prior, a 6 s lease (heartbeats every 2 s: a loaded machine may delay one) and two retries."""
    base = {
        "name": name,
        "cell": "lstm",
        "task": {"name": "padded_digits", "T": 20, "options": {"padding": "noise"}},
        "space": {
            "mu_f": {"type": "float", "low": -3.0, "high": 6.0},
            "lr": {"type": "float", "low": 3e-3, "high": 1e-2, "log": True},
        },
        "sampler": "tpe",
        "pruner": "none",
        "budget": 4,
        "seed": 0,
        "lease_seconds": 6,
        "retries": 2,
        "training": TRAINING,
        "prior": {"mode": "restrict"},
    }
    return _with(base, changes)


def faults(name: str, budget: int, lease_seconds: float, **training: object) -> dict:
    """The fault tests' study: random points of a trainable region, the prior off, no retries
    asked."""
    base = trained(name)
    del base["retries"]
    return {
        **base,
        "space": {"mu_f": {"type": "float", "low": 2.0, "high": 5.0},
                  "lr": {"type": "float", "low": 3e-3, "high": 1e-2, "log": True}},
        "sampler": "random",
        "prior": {"mode": "off"},
        "budget": budget,
        "lease_seconds": lease_seconds,
        "training": {**TRAINING, **training},
    }  # fmt: skip


def prior(**changes: object) -> dict:
    """The prior tests' study (restricted), before validation."""
    base = {
        "name": "p",
        "cell": "lstm",
        "task": PRIOR_TASK,
        "space": PRIOR_SPACE,
        "prior": {"mode": "restrict"},
    }
    return _with(base, changes)
