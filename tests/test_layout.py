"""The one declaration of each cell's parameters (meanfield/layout.py) and what derives from it:
the gate lists, the simulator's slots, the PyTorch initializer's parameter map; and the one parser
of flat hyperparameter names (meanfield.params.split_name)."""

from __future__ import annotations

import pytest
import torch

from meanfield import CELLS, MEMORY_GATE, Config, MeanFieldError
from meanfield._simcells import SLOTS
from meanfield.cells import THEORIES
from meanfield.layout import LAYOUTS, SCALE, CellLayout, Matrix, fan_in
from meanfield.params import split_name
from workers.models import SeqModel, initialize, parameter_blocks

N, N_IN = 6, 4


def test_gate_lists_come_from_the_layouts() -> None:
    assert list(LAYOUTS) == list(CELLS) == list(MEMORY_GATE)
    assert set(THEORIES) == set(LAYOUTS)
    for cell, layout in LAYOUTS.items():
        assert layout.cell == cell
        assert CELLS[cell] == layout.gates
        assert MEMORY_GATE[cell] == layout.memory_gate
    assert CELLS["lstm"] == ("i", "f", "g", "o")
    assert CELLS["gru"] == ("r", "z", "n")


@pytest.mark.parametrize("cell", list(LAYOUTS))
def test_simulator_slots_come_from_the_layout(cell: str) -> None:
    layout = LAYOUTS[cell]
    assert SLOTS[cell] == {m.slot: (m.gates, m.source) for m in layout.matrices}
    # Every gate has at most one matrix per source, and at least one matrix.
    pairs = [(g, src) for gates, src in SLOTS[cell].values() for g in gates]
    assert len(pairs) == len(set(pairs))
    assert {g for g, _ in pairs} == set(layout.gates)


def test_layouts_of_the_cells() -> None:
    """The sources of each cell (docs/theory.md §1): what multiplies what."""
    sources = {
        cell: {(g, m.source) for m in layout.matrices for g in m.gates}
        for cell, layout in LAYOUTS.items()
    }
    assert sources["lstm"] == {(g, s) for g in "ifgo" for s in "xh"}
    assert sources["gru"] == {(g, s) for g in "rzn" for s in "xh"}
    assert sources["minimalrnn"] == {("e", "x"), ("u", "e"), ("u", "h")}
    assert sources["vanilla"] == {("h", "x"), ("h", "h")}
    assert LAYOUTS["gru"].matrix("Un").gates == ("n",)  # n's recurrent term is reset-gated
    assert SCALE == {"x": "sigma", "h": "nu", "e": "sigma"}
    assert (fan_in("x", N, N_IN), fan_in("h", N, N_IN), fan_in("e", N, N_IN)) == (N_IN, N, N)


@pytest.mark.parametrize(
    ("gates", "memory", "matrices"),
    [
        (("a", "a"), None, (Matrix("W", ("a",), "x"),)),  # repeated gate
        (("a",), "b", (Matrix("W", ("a",), "x"),)),  # memory gate not a gate
        (("a",), None, (Matrix("W", ("b",), "x"),)),  # matrix of an unknown gate
        (("a", "b"), None, (Matrix("W", ("b", "a"), "x"),)),  # rows out of order
        (("a",), None, (Matrix("W", ("a",), "x"), Matrix("V", ("a",), "x"))),  # two x matrices
        (("a",), None, (Matrix("W", ("a",), "x"), Matrix("W", ("a",), "h"))),  # repeated slot
        (("a",), None, (Matrix("W", ("a",), "y"),)),  # unknown source
        (("a", "b"), None, (Matrix("W", ("a",), "x"),)),  # a gate without a matrix
    ],
)
def test_inconsistent_layouts_are_refused(gates, memory, matrices) -> None:
    with pytest.raises(ValueError, match="layout of 'toy'"):
        CellLayout("toy", gates, memory, matrices)


def _config(cell: str, weights: str = "gaussian") -> Config:
    values = {}
    for k, g in enumerate(CELLS[cell]):
        values |= {f"mu_{g}": k + 1.0, f"rho_{g}": 0.0, f"sigma_{g}": 1.0 + k, f"nu_{g}": 2.0 + k}
    return Config.from_flat(cell, values, weights=weights)


@pytest.mark.parametrize("cell", list(LAYOUTS))
def test_initializer_sets_what_the_layout_declares(cell: str) -> None:
    layout = LAYOUTS[cell]
    blocks = parameter_blocks(cell)
    # Every (source, gate) of the layout and every gate's bias appears exactly once.
    expected = [(m.source, g) for m in layout.matrices for g in m.gates]
    expected += [("b", g) for g in layout.gates]
    found = [b for bs in blocks.values() for b in bs]
    assert sorted(found) == sorted(expected)
    model = SeqModel(cell, N_IN, N, 2)
    core_params = dict(model.core.named_parameters())
    assert set(blocks) <= set(core_params)
    cfg = _config(cell)
    initialize(model, cfg, torch.Generator().manual_seed(0))
    for name, param in core_params.items():
        if name not in blocks:  # PyTorch's second bias: zero
            assert torch.count_nonzero(param) == 0, name
            continue
        rows = blocks[name]
        assert param.shape[0] == len(rows) * N, name
        for k, (src, g) in enumerate(rows):
            part = param[k * N : (k + 1) * N].double()
            if src == "b":  # rho = 0: the bias is exactly mu
                assert param.dim() == 1
                assert torch.allclose(part, torch.full((N,), float(cfg[g].mu), dtype=torch.float64))
            else:
                assert part.shape == (N, fan_in(src, N, N_IN)), (name, g)
                assert torch.count_nonzero(part) == part.numel()


@pytest.mark.parametrize("cell", list(LAYOUTS))
def test_orthogonal_blocks_are_the_recurrent_ones(cell: str) -> None:
    cfg = _config(cell, "orthogonal")
    model = SeqModel(cell, N_IN, N, 2)
    initialize(model, cfg, torch.Generator().manual_seed(1))
    params = dict(model.core.named_parameters())
    eye = torch.eye(N, dtype=torch.float64)
    for name, rows in parameter_blocks(cell).items():
        for k, (src, g) in enumerate(rows):
            block = params[name][k * N : (k + 1) * N].double()
            if src == "h":
                nu = float(cfg[g].nu)
                assert torch.allclose(block @ block.T, nu**2 * eye, atol=1e-5), (name, g)


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("mu", ("mu", None)),
        ("mu_f", ("mu", "f")),
        ("nu_g", ("nu", "g")),
        ("sigma", ("sigma", None)),
        ("rho_i", ("rho", "i")),
        ("foo", None),
        ("lr", None),
        ("batch_size", None),
        ("", None),
        ("mu2", None),
    ],
)
def test_split_name(name: str, parts: tuple[str, str | None] | None) -> None:
    assert split_name(name) == parts


def test_split_name_refuses_a_missing_gate() -> None:
    with pytest.raises(MeanFieldError) as err:
        split_name("mu_")
    assert (err.value.field, err.value.value) == ("mu_", "mu_")
    with pytest.raises(MeanFieldError) as err:
        split_name("nu_", 3.0)
    assert (err.value.field, err.value.value) == ("nu_", 3.0)


def test_config_uses_the_parser() -> None:
    cfg = Config.from_flat("lstm", {"mu": 1.0, "mu_f": 4.0})
    assert float(cfg["f"].mu) == 4.0 and float(cfg["i"].mu) == 1.0
    assert float(cfg.with_values(nu=2.0)["o"].nu) == 2.0
    assert float(cfg.with_values(nu_o=3.0)["o"].nu) == 3.0
    for bad in ("foo", "lr", "mu_", "mu_q"):
        with pytest.raises(MeanFieldError) as err:
            Config.from_flat("lstm", {bad: 1.0})
        assert (err.value.field, err.value.value) == (bad, 1.0)
        with pytest.raises(MeanFieldError):
            cfg.with_values(**{bad: 1.0})
