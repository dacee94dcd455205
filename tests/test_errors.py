"""Bad input: the engine raises MeanFieldError naming the field and the value; the CLI exits with
code 2 and one line on stderr, without a traceback (cli/main.py).

tests/test_cli.py already covers, in process: --set nu=-1, --cell foo, --set mu_q=1, --set mu=nan,
--set garbage, --inputs foo, --input-var -1, --T abc, critical --cell vanilla and map axis specs.
Here: the engine's own checks, and the CLI run as a real process (the console script) plus the
flags test_cli.py leaves out.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from meanfield import (
    Config,
    Inputs,
    MeanFieldError,
    critical_init,
    fixed_point,
    isometry,
    memory_check,
    memory_time_scale,
    trajectory,
)
from tests.support.cli import isotune

NAN, INF = float("nan"), float("inf")


def assert_names(err: pytest.ExceptionInfo[MeanFieldError], field: str, value: object) -> None:
    """The error carries field and value, and its message starts with ``field=repr(value)``."""
    e = err.value
    assert isinstance(e, ValueError)
    assert e.field == field
    if isinstance(value, float) and math.isnan(value):
        assert isinstance(e.value, float) and math.isnan(e.value)
    elif isinstance(value, np.ndarray):
        np.testing.assert_array_equal(e.value, value)
    else:
        assert e.value == value
    assert str(e).startswith(f"{field}={e.value!r}: "), str(e)
    assert e.reason and "\n" not in str(e)


# --- Config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "values", "field", "value"),
    [
        ("lstm", {"input_var": -1.0}, "input_var", -1.0),  # not a hyperparameter of a gate
        ("lstm", {"sigma": -1.0}, "sigma", -1.0),
        ("lstm", {"rho_g": -0.5}, "rho_g", -0.5),
        ("gru", {"nu_z": -2.0}, "nu_z", -2.0),
        ("vanilla", {"sigma_h": -1e-9}, "sigma_h", -1e-9),
        ("lstm", {"mu_x": 1.0}, "mu_x", 1.0),
        ("gru", {"mu_f": 3.0}, "mu_f", 3.0),  # an LSTM gate on a GRU
        ("minimalrnn", {"nu_z": 1.0}, "nu_z", 1.0),
        ("lstm", {"bias_f": 1.0}, "bias_f", 1.0),
        ("lstm", {"mu": NAN}, "mu", NAN),
        ("lstm", {"mu_f": INF}, "mu_f", INF),
        ("minimalrnn", {"sigma_e": -INF}, "sigma_e", -INF),
        ("lstm", {"mu_f": "two"}, "mu_f", "two"),
    ],
)
def test_config_rejects_bad_values(cell: str, values: dict, field: str, value: object) -> None:
    with pytest.raises(MeanFieldError) as err:
        Config.from_flat(cell, values)
    assert_names(err, field, value)


def test_config_names_the_offending_array() -> None:
    nu = np.array([0.5, 1.0, -0.25])
    with pytest.raises(MeanFieldError) as err:
        Config.from_flat("lstm", {"mu_f": np.linspace(0, 8, 3), "nu": nu})
    assert_names(err, "nu", nu)
    mu = np.array([0.0, np.nan])
    with pytest.raises(MeanFieldError) as err:
        Config.from_flat("gru", {"mu_z": mu})
    assert_names(err, "mu_z", mu)


@pytest.mark.parametrize("cell", ["foo", "LSTM", "", "rnn"])
def test_unknown_cell(cell: str) -> None:
    with pytest.raises(MeanFieldError) as err:
        Config.from_flat(cell, {"mu": 0.0})
    assert_names(err, "cell", cell)
    assert "lstm" in err.value.reason  # says what is allowed


@pytest.mark.parametrize("weights", ["Gaussian", "haar", ""])
def test_unknown_weights(weights: str) -> None:
    with pytest.raises(MeanFieldError) as err:
        Config.from_flat("lstm", {}, weights=weights)
    assert_names(err, "weights", weights)


def test_empty_gate_suffix_is_an_unknown_gate() -> None:
    """``mu_`` (a truncated ``mu_f``) must not silently set every gate's bias."""
    with pytest.raises(MeanFieldError) as err:
        Config.from_flat("lstm", {"mu_": 5.0})
    assert_names(err, "mu_", 5.0)


# --- Inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "value"),
    [
        ({"R": -0.5}, "input_var", -0.5),
        ({"R": NAN}, "input_var", NAN),
        ({"R": INF}, "input_var", INF),
        ({"R": "x"}, "input_var", "x"),
        ({"R": 1.0, "regime": "same"}, "inputs", "same"),
        ({"R": 1.0, "regime": "Independent"}, "inputs", "Independent"),
    ],
)
def test_inputs_reject_bad_values(kwargs: dict, field: str, value: object) -> None:
    with pytest.raises(MeanFieldError) as err:
        Inputs(**kwargs)
    assert_names(err, field, value)


def test_input_var_must_match_the_grid() -> None:
    """An array of input variances of the wrong length is bad input too (a service would get a
    numpy broadcasting error, i.e. an HTTP 500, instead of a 422 naming input_var)."""
    cfg = Config.from_flat("lstm", {"mu_f": np.array([1.0, 2.0])})
    R = np.array([1.0, 2.0, 3.0])
    with pytest.raises(MeanFieldError) as err:
        fixed_point(cfg, Inputs(R=R))
    assert err.value.field == "input_var"
    with pytest.raises(MeanFieldError):
        memory_time_scale(cfg, Inputs(R=R))


# --- T and c ---------------------------------------------------------------------------------

CFG = Config.from_flat("lstm", {"mu_f": 2.0})


@pytest.mark.parametrize(
    ("T", "c", "field", "value"),
    [
        (0, 1.0, "T", 0),
        (-10, 1.0, "T", -10),
        (NAN, 1.0, "T", NAN),
        (INF, 1.0, "T", INF),
        (100, 0.0, "c", 0.0),
        (100, -2.0, "c", -2.0),
        (100, NAN, "c", NAN),
    ],
)
def test_memory_check_and_critical_init_reject_T_and_c(
    T: float, c: float, field: str, value: object
) -> None:
    with pytest.raises(MeanFieldError) as err:
        memory_check(CFG, T, c)
    assert_names(err, field, value)
    with pytest.raises(MeanFieldError) as err:
        critical_init("lstm", T, c=c)
    assert_names(err, field, value)


@pytest.mark.parametrize(
    ("T", "c", "field"), [("100", 1.0, "T"), (None, 1.0, "T"), (100, "2", "c")]
)
def test_T_and_c_must_be_numbers(T: object, c: object, field: str) -> None:
    """Not a number is bad input as well: a MeanFieldError, not numpy's TypeError."""
    with pytest.raises(MeanFieldError) as err:
        memory_check(CFG, T, c)  # type: ignore[arg-type]
    assert err.value.field == field
    with pytest.raises(MeanFieldError) as err:
        critical_init("lstm", T, c=c)  # type: ignore[arg-type]
    assert err.value.field == field


@pytest.mark.parametrize("T", [0, -3])
def test_isometry_rejects_nonpositive_T(T: int) -> None:
    """T log m₁ and T (m₂/m₁² − 1) over T ≤ 0 steps mean nothing (0 or negative spreads)."""
    with pytest.raises(MeanFieldError) as err:
        isometry(np.array(0.9), np.array(1.0), T)
    assert_names(err, "T", T)


def test_critical_init_rejects_cells_and_names() -> None:
    with pytest.raises(MeanFieldError) as err:
        critical_init("vanilla", 100)
    assert_names(err, "cell", "vanilla")
    with pytest.raises(MeanFieldError) as err:
        critical_init("transformer", 100)
    assert_names(err, "cell", "transformer")
    with pytest.raises(MeanFieldError) as err:
        critical_init("lstm", 100, base={"mu_x": 1.0})
    assert_names(err, "mu_x", 1.0)
    with pytest.raises(MeanFieldError) as err:
        critical_init("gru", 100, base={"sigma": -1.0})
    assert_names(err, "sigma", -1.0)
    with pytest.raises(MeanFieldError) as err:
        critical_init("gru", 100, weights="unitary")
    assert_names(err, "weights", "unitary")


def test_trajectory_rejects_unknown_start() -> None:
    with pytest.raises(MeanFieldError) as err:
        trajectory(CFG, steps=3, start="random")
    assert_names(err, "start", "random")


# --- CLI -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fixed-point", "--cell", "lstm", "--set", "sigma=-0.5"], "sigma=-0.5"),
        (["fixed-point", "--cell", "gru", "--weights", "haar"], "weights=haar"),
        (["critical", "--cell", "lstm", "--T", "0"], "T=0"),
        (["critical", "--cell", "minimalrnn", "--T", "100", "--c", "-1"], "c=-1"),
    ],
)
def test_cli_process_bad_input(args: list[str], expected: str) -> None:
    """The real console script: exit code 2, nothing on stdout, one line `error: field=value: …`
    on stderr, no traceback."""
    proc = isotune("theory", *args, script=True, timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {expected}: "), lines[0]
    assert "Traceback" not in proc.stderr


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fixed-point", "--set", "rho_g=-0.1"], "rho_g=-0.1"),
        (["fixed-point", "--set", "nu=1e400"], "nu=1e400"),
        (["fixed-point", "--set", "mu_f=inf"], "mu_f=inf"),
        (["fixed-point", "--set", "=1"], "set==1"),
        (["fixed-point", "--cell", "gru", "--set", "mu_f=2"], "mu_f=2"),
        (["fixed-point", "--input-var", "nan"], "input_var=nan"),
        (["fixed-point", "--inputs", "shared", "--input-var", "-2"], "input_var=-2"),
        (["fixed-point", "--T", "0"], "T=0"),
        (["fixed-point", "--T", "-7"], "T=-7"),
        (["critical", "--cell", "foo", "--T", "100"], "cell=foo"),
        (["critical", "--T", "100", "--c", "0"], "c=0"),
        (["critical", "--T", "100", "--c", "nan"], "c=nan"),
        (["critical", "--T", "100", "--weights", "x"], "weights=x"),
        (["critical", "--T", "100", "--set", "mu_x=1"], "mu_x=1"),
        (["map", "--T", "0", "--out", "x.png"], "T=0"),
        (["map", "--T", "10", "--c", "-1", "--out", "x.png"], "c=-1"),
        (["map", "--cell", "foo", "--T", "10", "--out", "x.png"], "cell=foo"),
    ],
)
def test_cli_bad_flags(args: list[str], expected: str, tmp_path: Path) -> None:
    """In process, the flags test_cli.py does not cover; the map writes nothing on failure."""
    args = [str(tmp_path / a) if a.endswith(".png") else a for a in args]
    result = runner.invoke(app, ["theory", *args])
    try:
        err = result.stderr
    except ValueError:  # older click: stderr mixed into output
        err = result.output
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}: "), err
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())
