"""The recurrent models the workers train, initialized from the theory's hyperparameters.

The cores are exactly the cells of docs/theory.md §1: ``torch.nn.LSTM``, ``torch.nn.GRU`` (reset
after the matmul), ``torch.nn.RNN`` with tanh (``vanilla``) and :class:`MinimalRNN` [C18]. Their
weights are set by :func:`initialize` from a single :class:`meanfield.Config` following
docs/theory.md §2:

- input weights (W_k)_ij ~ N(0, sigma_k² / n_in) (the minimalRNN's W_u multiplies the embedding e,
  fan-in n);
- recurrent weights (U_k)_ij ~ N(0, nu_k² / n), or U_k = nu_k · (Haar-orthogonal n×n) when
  ``cfg.weights == "orthogonal"``;
- biases (b_k)_i ~ N(mu_k, rho_k²), all of it in ``bias_ih``; ``bias_hh`` is zero (for the GRU this
  keeps ``b_hn``, which sits inside the reset product, at zero).

PyTorch packs the gates in rows, LSTM (i, f, g, o) and GRU (r, z, n), the engine's order
(:data:`meanfield.CELLS`). ``tests/test_models.py`` checks that one step of these modules equals the
engine's finite-width simulator (``meanfield/_simcells.py``) on the same weights.

The preset ``chrono`` is the chrono initialization of Tallec & Ollivier (ICLR 2018), which many
LSTM users apply by hand: PyTorch's own weights, and per unit the keep gate's bias log U[1, T − 1]
(the LSTM's forget gate, its input gate the negative; the GRU's update gate z; the minimalRNN's u),
T the bridge length (:func:`chrono_biases`).

Inputs are time-major, ``(seq, batch, input_size)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from meanfield import CELLS, MEMORY_GATE, Config, Inputs, MeanFieldError, critical_init
from meanfield.critical import DEFAULT_C
from meanfield.layout import LAYOUTS, SCALE, fan_in

__all__ = [
    "PRESETS",
    "MinimalRNN",
    "SeqModel",
    "build_model",
    "chrono_biases",
    "initialize",
    "parameter_blocks",
    "resolve_init",
]

#: Named initializations: PyTorch's own (``None`` config), the engine's critical one and chrono
#: (PyTorch's own with chrono biases, see the module docstring).
PRESETS = ("default", "critical", "chrono")


class MinimalRNN(nn.Module):
    """The minimalRNN of [C18], docs/theory.md §1, single layer, time-major.

    e_t = tanh(W_e x_t + b_e);  u_t = σ(U_u h_{t-1} + W_u e_t + b_u);
    h_t = u_t h_{t-1} + (1 − u_t) e_t

    Parameters: ``weight_xe`` (W_e, hidden × input), ``bias_e``, ``weight_eu`` (W_u, hidden ×
    hidden), ``weight_hu`` (U_u, hidden × hidden), ``bias_u``. The embedding does not depend on the
    state, so e and W_u e + b_u are computed for all steps at once; only U_u h runs in the loop.
    ``forward`` returns ``(outputs, h_n)`` like ``torch.nn.RNN``: outputs (seq, batch, hidden),
    h_n (1, batch, hidden).
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_xe = nn.Parameter(torch.empty(hidden_size, input_size))
        self.bias_e = nn.Parameter(torch.empty(hidden_size))
        self.weight_eu = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.weight_hu = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias_u = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's recurrent default: every weight and bias U(−1/√n, 1/√n)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"x: expected shape (seq, batch, {self.input_size}), got {tuple(x.shape)}"
            )
        e = torch.tanh(torch.addmm(self.bias_e, x.flatten(0, 1), self.weight_xe.t()))
        pre_u = torch.addmm(self.bias_u, e, self.weight_eu.t()).view(*x.shape[:2], -1)
        e = e.view(*x.shape[:2], -1)
        if h0 is None:
            h = x.new_zeros(x.shape[1], self.hidden_size)
        else:
            h = h0.reshape(x.shape[1], self.hidden_size)
        u_weight = self.weight_hu.t()
        outputs = []
        for a_t, e_t in zip(pre_u.unbind(0), e.unbind(0), strict=True):
            u = torch.sigmoid(torch.addmm(a_t, h, u_weight))
            h = e_t + u * (h - e_t)  # = u h + (1 − u) e
            outputs.append(h)
        return torch.stack(outputs), h.unsqueeze(0)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


def _core(cell: str, input_size: int, hidden_size: int) -> nn.Module:
    if cell == "lstm":
        return nn.LSTM(input_size, hidden_size)
    if cell == "gru":
        return nn.GRU(input_size, hidden_size)
    if cell == "vanilla":
        return nn.RNN(input_size, hidden_size, nonlinearity="tanh")
    if cell == "minimalrnn":
        return MinimalRNN(input_size, hidden_size)
    raise MeanFieldError("cell", cell, f"unknown cell; choose one of {sorted(CELLS)}")


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise MeanFieldError(name, value, "must be a positive integer")
    return int(value)


class SeqModel(nn.Module):
    """A single-layer recurrent core and a linear readout of its last ``output_steps`` states.

    ``forward(x)``: x (seq, batch, input_size) -> (output_steps, batch, n_outputs).
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        n_outputs: int,
        output_steps: int = 1,
    ) -> None:
        super().__init__()
        input_size = _positive_int("input_size", input_size)
        hidden_size = _positive_int("hidden_size", hidden_size)
        n_outputs = _positive_int("n_outputs", n_outputs)
        self.output_steps = _positive_int("output_steps", output_steps)
        self.cell = cell
        self.core = _core(cell, input_size, hidden_size)
        self.readout = nn.Linear(hidden_size, n_outputs)

    @property
    def input_size(self) -> int:
        return self.core.input_size

    @property
    def hidden_size(self) -> int:
        return self.core.hidden_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[0] < self.output_steps:
            raise ValueError(
                f"x: expected shape (seq >= {self.output_steps}, batch, {self.input_size}), "
                f"got {tuple(x.shape)}"
            )
        states, _ = self.core(x)
        return self.readout(states[-self.output_steps :])


def _recurrent_params(core: nn.Module) -> dict[str, nn.Parameter]:
    if isinstance(core, MinimalRNN):
        return dict(core.named_parameters())
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    return {name: getattr(core, name) for name in names}


#: PyTorch's names for the parts of a cell's layout (:data:`meanfield.layout.LAYOUTS`): a weight
#: matrix by its slot, a gate's bias by ``"b_<gate>"``. ``nn.LSTM``/``GRU``/``RNN`` instead stack
#: every matrix of one source in one parameter and every bias in ``bias_ih_l0`` (:data:`_PACKED`).
_TORCH_NAMES: dict[str, dict[str, str]] = {
    "minimalrnn": {
        "W": "weight_xe",
        "V": "weight_eu",
        "U": "weight_hu",
        "b_e": "bias_e",
        "b_u": "bias_u",
    },
}
_PACKED = {"x": "weight_ih_l0", "h": "weight_hh_l0", "b": "bias_ih_l0"}

#: A block of rows of a parameter: (source "x"/"h"/"e" of a weight matrix, or "b" for a bias; gate).
Block = tuple[str, str]


def parameter_blocks(cell: str) -> dict[str, list[Block]]:
    """The core's parameters that :func:`initialize` sets and the blocks stacked in their rows.

    Derived from the cell's layout: each matrix slot contributes one block per gate (in its order),
    each gate one bias block. A core parameter missing here (``bias_hh_l0``) is set to zero.
    """
    layout = LAYOUTS[cell]
    names = _TORCH_NAMES.get(cell)
    out: dict[str, list[Block]] = {}
    for m in layout.matrices:
        name = names[m.slot] if names else _PACKED[m.source]
        out.setdefault(name, []).extend((m.source, g) for g in m.gates)
    for g in layout.gates:
        out.setdefault(names[f"b_{g}"] if names else _PACKED["b"], []).append(("b", g))
    if names is None:  # PyTorch packs the gates in the layout's order
        for name, blocks in out.items():
            if [g for _, g in blocks] != list(layout.gates):
                raise AssertionError(f"{cell} {name}: rows {blocks} not in gate order")
    return out


def _gaussian(shape: tuple[int, ...], std: float, gen: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64) * std


def _haar(n: int, gen: torch.Generator | None) -> torch.Tensor:
    """A Haar-distributed n×n orthogonal matrix: QR of a Gaussian matrix with the sign fix."""
    q, r = torch.linalg.qr(torch.randn((n, n), generator=gen, dtype=torch.float64))
    return q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)


def _scalar(cfg: Config, gate: str, hp: str) -> float:
    return float(getattr(cfg[gate], hp))


@torch.no_grad()
def initialize(
    model: SeqModel | nn.Module, cfg: Config | None, generator: torch.Generator | None = None
) -> None:
    """Set the recurrent core's weights from a single configuration (docs/theory.md §2), in place.

    ``model`` is a :class:`SeqModel` or a bare core. ``cfg=None`` leaves PyTorch's default
    initialization untouched (preset ``default``); the readout is never touched. Random numbers come
    from ``generator`` (a CPU ``torch.Generator``; ``None``: torch's global generator), drawn in
    float64 on the CPU in a fixed order, so a seed gives the same weights on every device and dtype.
    """
    if cfg is None:
        return
    core = model.core if isinstance(model, SeqModel) else model
    cell = model.cell if isinstance(model, SeqModel) else _cell_of(core)
    if not isinstance(cfg, Config):
        raise MeanFieldError("cfg", cfg, "must be a meanfield.Config or None")
    if cfg.cell != cell:
        raise MeanFieldError("cell", cfg.cell, f"configuration is for {cfg.cell}, model is {cell}")
    if cfg.shape != ():
        raise MeanFieldError("cfg", cfg.shape, "must be a single configuration (shape ())")
    n, n_in = core.hidden_size, core.input_size
    orthogonal = cfg.weights == "orthogonal"

    def recurrent(gate: str) -> torch.Tensor:
        nu = _scalar(cfg, gate, "nu")
        return (
            nu * _haar(n, generator)
            if orthogonal
            else _gaussian((n, n), nu / math.sqrt(n), generator)
        )

    def bias(gate: str) -> torch.Tensor:
        return _scalar(cfg, gate, "mu") + _gaussian((n,), _scalar(cfg, gate, "rho"), generator)

    def block(source: str, gate: str) -> torch.Tensor:
        if source == "b":
            return bias(gate)
        if source == "h":
            return recurrent(gate)
        d = fan_in(source, n, n_in)
        return _gaussian((n, d), _scalar(cfg, gate, SCALE[source]) / math.sqrt(d), generator)

    blocks = parameter_blocks(cell)
    # In the core's parameter order: that order is the order of the random numbers.
    for name, param in _recurrent_params(core).items():
        if name in blocks:
            param.copy_(torch.cat([block(src, g) for src, g in blocks[name]]))
        else:
            param.zero_()


def _cell_of(core: nn.Module) -> str:
    if isinstance(core, MinimalRNN):
        return "minimalrnn"
    if isinstance(core, nn.RNNBase) and (
        core.num_layers != 1 or core.bidirectional or core.proj_size or not core.bias
    ):
        raise MeanFieldError("model", core, "must be a single-layer, one-way core with biases")
    if isinstance(core, nn.LSTM):
        return "lstm"
    if isinstance(core, nn.GRU):
        return "gru"
    if isinstance(core, nn.RNN) and core.nonlinearity == "tanh":
        return "vanilla"
    raise MeanFieldError(
        "model", type(core).__name__, "is not one of the cells of docs/theory.md §1"
    )


def resolve_init(
    cell: str,
    init: str | Mapping[str, object] | Config,
    T: int | None = None,
    inputs: Inputs | None = None,
    weights: str | None = None,
    c: float = DEFAULT_C,
) -> Config | None:
    """The configuration an ``init`` specification stands for (``None``: PyTorch's default).

    - ``"default"``: ``None``, PyTorch's own initialization.
    - ``"critical"``: the engine's :func:`meanfield.critical_init` for bridge length ``T``, input
      statistics ``inputs`` (default ``Inputs()``) and trainability constant ``c`` (ξ_C = T/c);
      orthogonal recurrent weights unless ``weights`` says otherwise. Not available for ``vanilla``
      (no memory gate). ``c`` is ignored by the other kinds of ``init``.
    - a mapping of flat hyperparameters, e.g. ``{"mu_f": 4, "nu": 1}`` (unset ones take the engine's
      defaults mu 0, rho 0, sigma 1, nu 1); ``weights`` defaults to ``"gaussian"``.
    - a :class:`meanfield.Config` of this cell, returned as is (``weights`` must then be ``None``).

    Every invalid input raises :class:`meanfield.MeanFieldError` (a ``ValueError``) naming the field
    and its value.
    """
    if cell not in CELLS:
        raise MeanFieldError("cell", cell, f"unknown cell; choose one of {sorted(CELLS)}")
    if weights is not None and weights not in ("gaussian", "orthogonal"):
        raise MeanFieldError("weights", weights, "must be 'gaussian' or 'orthogonal'")
    if isinstance(init, Config):
        if init.cell != cell:
            raise MeanFieldError(
                "init", init.cell, f"configuration is for another cell than {cell}"
            )
        if init.shape != ():
            raise MeanFieldError("init", init.shape, "must be a single configuration (shape ())")
        if weights is not None and weights != init.weights:
            raise MeanFieldError(
                "weights", weights, f"conflicts with the Config's {init.weights!r}"
            )
        return init
    if isinstance(init, Mapping):
        for name, value in init.items():
            if np.ndim(value) != 0:  # type: ignore[arg-type]
                raise MeanFieldError(str(name), value, "must be a single number")
        return Config.from_flat(cell, init, weights=weights or "gaussian")
    if init == "default":
        return None
    if init == "chrono":
        if MEMORY_GATE[cell] is None:
            raise MeanFieldError(
                "init", init, f"cell {cell!r} has no memory gate; use 'default' or hyperparameters"
            )
        return None
    if init == "critical":
        gate = MEMORY_GATE[cell]
        if gate is None:
            raise MeanFieldError(
                "init", init, f"cell {cell!r} has no memory gate; use 'default' or hyperparameters"
            )
        if T is None:
            raise MeanFieldError("T", T, "init='critical' needs the bridge length T (steps)")
        res = critical_init(cell, T, inputs, c=c, weights=weights or "orthogonal")
        if not res.converged:
            raise MeanFieldError(
                "T",
                T,
                f"critical {gate}-gate bias did not converge (xi {res.xi_c:.3g} for "
                f"target {res.target_xi:.3g})",
            )
        return res.config
    raise MeanFieldError(
        "init", init, f"unknown preset; use one of {list(PRESETS)} or a mapping of hyperparameters"
    )


def build_model(
    cell: str,
    input_size: int,
    hidden_size: int,
    n_outputs: int,
    output_steps: int = 1,
    init: str | Mapping[str, object] | Config = "default",
    T: int | None = None,
    inputs: Inputs | None = None,
    weights: str | None = None,
    seed: int = 0,
    c: float = DEFAULT_C,
) -> tuple[SeqModel, Config | None]:
    """A :class:`SeqModel` initialized by ``init`` (see :func:`resolve_init`) and its Config.

    Everything random (PyTorch's default init, the readout, :func:`initialize`) derives from
    ``seed``; torch's global random state is left as it was.
    """
    cfg = resolve_init(cell, init, T, inputs, weights, c)
    chrono = isinstance(init, str) and init == "chrono"
    if chrono and T is None:
        raise MeanFieldError("T", T, "init='chrono' needs the bridge length T (steps)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SeqModel(cell, input_size, hidden_size, n_outputs, output_steps)
        # A stream of its own for the configured weights (not a replay of the one above).
        init_seed = int(torch.randint(2**62, (), dtype=torch.int64))
    initialize(model, cfg, torch.Generator().manual_seed(init_seed))
    if chrono:
        chrono_biases(model, T, torch.Generator().manual_seed(init_seed))
    return model, cfg


@torch.no_grad()
def chrono_biases(model: SeqModel, T: int, generator: torch.Generator | None = None) -> None:
    """Set the chrono biases (Tallec & Ollivier 2018) for dependencies up to ``T`` steps, in place:
    per unit b = log U[1, T − 1] on the keep gate (LSTM: forget gate, and −b on the input gate;
    GRU: update gate z; minimalRNN: u), the gate's other bias (``bias_hh``) zero. Drawn in float64
    on the CPU from ``generator``."""
    core, n = model.core, model.core.hidden_size
    span = max(float(T) - 2.0, 0.0)  # U[1, T − 1] = 1 + (T − 2)·U[0, 1]
    b = torch.log1p(span * torch.rand(n, generator=generator, dtype=torch.float64))
    if model.cell == "minimalrnn":
        core.bias_u.copy_(b)
        return
    gate = MEMORY_GATE.get(model.cell)
    if gate is None:
        raise MeanFieldError("cell", model.cell, "has no memory gate for chrono biases")
    gates = LAYOUTS[model.cell].gates  # PyTorch packs the gates' rows in the layout's order

    def rows(g: str) -> slice:
        k = gates.index(g)
        return slice(k * n, (k + 1) * n)

    core.bias_ih_l0[rows(gate)] = b
    core.bias_hh_l0[rows(gate)] = 0.0
    if model.cell == "lstm":  # the input gate: −b
        core.bias_ih_l0[rows("i")] = -b
        core.bias_hh_l0[rows("i")] = 0.0
