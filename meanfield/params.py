"""Initialization hyperparameters and input statistics (docs/theory.md §2).

A :class:`Config` holds, for every gate of a cell, the bias mean ``mu``, bias spread ``rho``, input
weight scale ``sigma`` and recurrent weight scale ``nu``. Values may be numpy arrays: all of them
are broadcast to one shape, and every function of the engine then evaluates the whole array of
configurations at once (a "grid").

Gate names follow PyTorch: LSTM ``i, f, g, o``; GRU ``r, z, n``; minimalRNN ``e, u`` [C18];
vanilla ``h``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from meanfield.errors import MeanFieldError
from meanfield.layout import LAYOUTS

__all__ = [
    "CELLS",
    "HYPERPARAMETERS",
    "MEMORY_GATE",
    "Config",
    "GateParams",
    "Inputs",
    "is_init",
    "split_name",
]

#: Gates of each cell, in PyTorch's order (from :data:`meanfield.layout.LAYOUTS`).
CELLS: dict[str, tuple[str, ...]] = {cell: layout.gates for cell, layout in LAYOUTS.items()}

#: The gate whose bias sets the memory time scale (forget / update gate), from the layouts.
MEMORY_GATE: dict[str, str | None] = {cell: layout.memory_gate for cell, layout in LAYOUTS.items()}

#: Per-gate hyperparameters (docs/theory.md §2).
HYPERPARAMETERS = ("mu", "rho", "sigma", "nu")


#: Marks an argument that was not given.
_UNSET: object = object()


def split_name(name: str, value: object = _UNSET) -> tuple[str, str | None] | None:
    """The hyperparameter and the gate a flat name stands for; ``None`` if it is not one.

    A flat name is a hyperparameter of :data:`HYPERPARAMETERS`, optionally followed by ``_`` and a
    gate: ``"mu"`` → ``("mu", None)`` (every gate), ``"nu_f"`` → ``("nu", "f")``. A name whose
    part before the first ``_`` is not a hyperparameter (``"lr"``, ``"batch_size"``, ``"foo"``)
    gives ``None``. A hyperparameter followed by ``_`` and nothing (``"mu_"``, a truncated
    ``mu_f``) raises :class:`MeanFieldError` naming it and ``value`` (the value given under that
    name; default: the name). The gate is not checked against any cell: :meth:`Config.from_flat`
    does that.
    """
    hp, sep, gate = name.partition("_")
    if hp not in HYPERPARAMETERS:
        return None
    if sep and not gate:
        raise MeanFieldError(
            name, name if value is _UNSET else value, "missing gate after '_' (e.g. mu_f)"
        )
    return hp, gate or None


def is_init(name: str) -> bool:
    """Whether a flat name is an initialization hyperparameter (``mu``, ``nu_f``…), not a training
    option (``lr``); raises like :func:`split_name` for a hyperparameter without its gate."""
    return split_name(name) is not None


#: Values used when a hyperparameter is not given.
DEFAULTS = {"mu": 0.0, "rho": 0.0, "sigma": 1.0, "nu": 1.0}

Weights = Literal["gaussian", "orthogonal"]
Regime = Literal["independent", "shared"]


def positive_number(name: str, value: object) -> float:
    """A finite number > 0 (T, c, …), else a :class:`MeanFieldError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise MeanFieldError(name, value, "must be a positive number")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise MeanFieldError(name, value, "must be a positive number")
    return v


def _finite(name: str, value: object, *, nonnegative: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise MeanFieldError(name, value, "must be a number") from None
    if not np.all(np.isfinite(arr)):
        raise MeanFieldError(name, value, "must be finite (not NaN or infinity)")
    if nonnegative and np.any(arr < 0):
        raise MeanFieldError(name, value, "must be >= 0")
    return arr


@dataclass(frozen=True)
class GateParams:
    """Hyperparameters of one gate: bias ~ N(mu, rho²), W ~ N(0, sigma²/n_in), U ~ N(0, nu²/n)."""

    mu: np.ndarray
    rho: np.ndarray
    sigma: np.ndarray
    nu: np.ndarray


@dataclass(frozen=True)
class Inputs:
    """Input statistics over the part of the sequence to be bridged (docs/theory.md §2).

    Attributes:
        R: mean second moment of the input coordinates, E[x²].
        regime: ``independent`` (two examples see independent inputs) or ``shared`` (identical
            inputs, cross-moment R).
        R_ab: cross-moment E[x^a x^b] of two examples' inputs. Default: 0 for ``independent``, R
            for ``shared``. Independent inputs that are not centred have a positive one (e.g.
            uniform values in [0, 1]: E[x]²); ``shared`` requires R_ab = R.
    """

    R: float | np.ndarray = 1.0
    regime: Regime = "independent"
    R_ab: float | np.ndarray | None = None

    def __post_init__(self) -> None:
        R = _finite("input_var", self.R, nonnegative=True)
        object.__setattr__(self, "R", R)
        if self.regime not in ("independent", "shared"):
            raise MeanFieldError("inputs", self.regime, "must be 'independent' or 'shared'")
        if self.R_ab is None:
            r_ab = R if self.regime == "shared" else np.zeros_like(R)
        else:
            r_ab = _finite("input_cross", self.R_ab)
            if np.any(np.abs(r_ab) > R * (1 + 1e-12)):
                raise MeanFieldError("input_cross", self.R_ab, "must satisfy |R_ab| <= R")
            if self.regime == "shared" and not np.allclose(r_ab, R):
                raise MeanFieldError(
                    "input_cross", self.R_ab, "shared inputs have R_ab = R; use independent"
                )
        object.__setattr__(self, "R_ab", r_ab)


@dataclass(frozen=True)
class Config:
    """A cell and its initialization hyperparameters, possibly an array of configurations."""

    cell: str
    gates: Mapping[str, GateParams]
    weights: Weights = "gaussian"
    shape: tuple[int, ...] = field(default=())

    @classmethod
    def from_flat(
        cls,
        cell: str,
        values: Mapping[str, object] | None = None,
        *,
        weights: str = "gaussian",
    ) -> Config:
        """Build a configuration from flat names such as ``mu``, ``nu_f``, ``sigma_g``.

        A name without gate suffix sets every gate; a gate-specific name overrides it whatever the
        order. Values may be scalars or arrays (broadcast together).
        """
        if cell not in CELLS:
            raise MeanFieldError("cell", cell, f"unknown cell; choose one of {sorted(CELLS)}")
        if weights not in ("gaussian", "orthogonal"):
            raise MeanFieldError("weights", weights, "must be 'gaussian' or 'orthogonal'")
        gate_names = CELLS[cell]
        shared: dict[str, object] = {}
        specific: dict[tuple[str, str], object] = {}
        for name, value in (values or {}).items():
            parts = split_name(name, value)
            if parts is None:
                raise MeanFieldError(
                    name, value, f"unknown hyperparameter; use one of {list(HYPERPARAMETERS)}"
                )
            hp, gate = parts
            if gate and gate not in gate_names:
                raise MeanFieldError(
                    name, value, f"unknown gate {gate!r} for cell {cell}; gates are {gate_names}"
                )
            if gate:
                specific[(hp, gate)] = value
            else:
                shared[hp] = value
        arrays: dict[tuple[str, str], np.ndarray] = {}
        for gate in gate_names:
            for hp in HYPERPARAMETERS:
                key = (hp, gate)
                raw = specific.get(key, shared.get(hp, DEFAULTS[hp]))
                label = f"{hp}_{gate}" if key in specific else hp
                arrays[key] = _finite(label, raw, nonnegative=hp != "mu")
        try:
            shape = np.broadcast_shapes(*(a.shape for a in arrays.values()))
        except ValueError:
            raise MeanFieldError("values", values, "array shapes do not broadcast") from None
        gates = {
            g: GateParams(
                **{hp: np.broadcast_to(arrays[(hp, g)], shape).copy() for hp in HYPERPARAMETERS}
            )
            for g in gate_names
        }
        return cls(cell=cell, gates=gates, weights=weights, shape=shape)  # type: ignore[arg-type]

    def __getitem__(self, gate: str) -> GateParams:
        return self.gates[gate]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def flat(self) -> Config:
        """The same configurations as a 1-D array (what the engine computes on)."""
        n = self.size
        gates = {
            g: GateParams(**{hp: getattr(p, hp).reshape(n) for hp in HYPERPARAMETERS})
            for g, p in self.gates.items()
        }
        return replace(self, gates=gates, shape=(n,))

    def take(self, index: np.ndarray) -> Config:
        """The configurations ``self.flat()[index]`` as a 1-D array."""
        flat = self.flat()
        gates = {
            g: GateParams(**{hp: getattr(p, hp)[index] for hp in HYPERPARAMETERS})
            for g, p in flat.gates.items()
        }
        return replace(flat, gates=gates, shape=(len(np.arange(flat.size)[index]),))

    def to_flat_dict(self) -> dict[str, object]:
        """Per-gate values as ``{"mu_f": ..., ...}`` (floats for a single configuration)."""
        out: dict[str, object] = {}
        for g, p in self.gates.items():
            for hp in HYPERPARAMETERS:
                v = getattr(p, hp)
                out[f"{hp}_{g}"] = float(v) if v.ndim == 0 else v
        return out

    def with_values(self, **values: object) -> Config:
        """A copy with some flat-named values replaced (same rules as :meth:`from_flat`)."""
        merged = {k: v for k, v in self.to_flat_dict().items()}
        for name, value in values.items():
            parts = split_name(name, value)
            if parts is not None and parts[1] is None:  # every gate
                for g in self.gates:
                    merged[f"{parts[0]}_{g}"] = value
            else:  # one gate, or not a hyperparameter (from_flat says so)
                merged[name] = value
        return Config.from_flat(self.cell, merged, weights=self.weights)
