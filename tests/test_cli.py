"""``isotune theory``: the JSON contract, bad input (exit code 2), the map and the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.support.cli import isotune

LSTM = ["--cell", "lstm", "--set", "sigma=1", "--set", "nu=1", "--set", "mu=0", "--set", "mu_f=2"]
FLOAT_KEYS = ("q_star", "c_star", "chi_c", "xi_c", "chi_q", "xi_q", "m1", "m2")

runner = CliRunner()


def run(*args: str) -> object:
    return runner.invoke(app, ["theory", *args])


def stderr_of(result: object) -> str:
    try:
        return result.stderr  # type: ignore[attr-defined]
    except ValueError:  # older click: stderr mixed into output
        return result.output  # type: ignore[attr-defined]


def json_of(*args: str) -> dict:
    result = run(*args, "--json")
    assert result.exit_code == 0, stderr_of(result)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, "one JSON object on one line"
    return json.loads(lines[0])


def test_fixed_point_json_lstm() -> None:
    d = json_of("fixed-point", *LSTM, "--input-var", "1", "--inputs", "independent", "--T", "500")
    assert (d["cell"], d["inputs"], d["input_var"], d["weights"]) == (
        "lstm",
        "independent",
        1.0,
        "gaussian",
    )
    for key in (*FLOAT_KEYS, "s_star", "log_m1_T", "spread_T"):
        assert isinstance(d[key], float) and math.isfinite(d[key]), key
    assert d["converged"] is True and d["T"] == 500
    assert d["q_star"] > 0 and d["s_star"] > 0 and 0 <= d["chi_c"] < 1
    assert d["xi_c"] == pytest.approx(-1 / math.log(d["chi_c"]), rel=1e-12)
    assert d["log_m1_T"] == pytest.approx(500 * math.log(d["m1"]), rel=1e-12)
    assert set(d["params"]) == {f"{hp}_{g}" for hp in ("mu", "rho", "sigma", "nu") for g in "ifgo"}


def test_fixed_point_gru_has_no_s_star_and_no_T_fields() -> None:
    d = json_of("fixed-point", "--cell", "gru", "--set", "mu_z=1")
    assert d["s_star"] is None
    assert all(math.isfinite(d[k]) for k in FLOAT_KEYS)
    assert "T" not in d and "log_m1_T" not in d
    assert d["params"]["mu_z"] == 1.0 and d["params"]["mu_r"] == 0.0


def test_infinite_xi_is_the_string_inf() -> None:
    d = json_of("fixed-point", "--cell", "minimalrnn", "--set", "mu_u=45")
    assert d["xi_c"] == "inf" and float(d["xi_c"]) == math.inf


@pytest.mark.parametrize(
    "sets", [["mu_f=2", "mu=0"], ["mu=0", "mu_f=2"]], ids=["specific-first", "shared-first"]
)
def test_gate_specific_value_wins_whatever_the_order(sets: list[str]) -> None:
    args = [a for s in sets for a in ("--set", s)]
    d = json_of("fixed-point", "--cell", "lstm", *args)
    p = d["params"]
    assert (p["mu_f"], p["mu_i"], p["mu_g"], p["mu_o"]) == (2.0, 0.0, 0.0, 0.0)
    ref = json_of("fixed-point", "--cell", "lstm", "--set", "mu_f=2")
    assert d["xi_c"] == ref["xi_c"]


def test_table_names_each_quantity_with_its_value() -> None:
    result = run("fixed-point", *LSTM, "--T", "500")
    assert result.exit_code == 0
    d = json_of("fixed-point", *LSTM, "--T", "500")
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines() if line.strip()}
    for key in (*FLOAT_KEYS, "s_star", "log_m1_T", "spread_T"):
        assert float(rows[key]) == pytest.approx(d[key], rel=1e-5, abs=1e-300), key


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["fixed-point", "--set", "nu=-1"], "nu=-1"),
        (["fixed-point", "--cell", "foo"], "cell=foo"),
        (["fixed-point", "--cell", "lstm", "--set", "mu_q=1"], "mu_q=1"),
        (["fixed-point", "--set", "mu=nan"], "mu=nan"),
        (["fixed-point", "--set", "garbage"], "set=garbage"),
        (["fixed-point", "--inputs", "foo"], "inputs=foo"),
        (["fixed-point", "--input-var", "-1"], "input_var=-1"),
        (["fixed-point", "--T", "abc"], "--T"),
        (["critical", "--cell", "vanilla", "--T", "100"], "cell=vanilla"),
        (["map", "--T", "10", "--out", "x.png", "--x", "mu_f:0:8"], "x=mu_f:0:8"),
        (["map", "--T", "10", "--out", "x.png", "--y", "nu:0:1:1"], "y=nu:0:1:1"),
        (["map", "--T", "10", "--out", "x.png", "--y", "nu:-1:1:4"], "nu="),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args: list[str], field: str) -> None:
    result = run(*args)
    err = stderr_of(result)
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)  # not an escaped traceback
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and field in lines[0], err
    assert "Traceback" not in result.output


def test_critical_json_reaches_target_time_scale() -> None:
    d = json_of("critical", "--cell", "lstm", "--T", "200", "--c", "2", "--weights", "gaussian")
    assert d["target_xi"] == 100.0 and d["gate"] == "f" and d["converged"] is True
    assert d["xi_c"] == pytest.approx(100.0, rel=0.01)
    assert d["mu"] == d["params"]["mu_f"] and d["weights"] == "gaussian"
    assert math.isfinite(d["log_m1_T"]) and math.isfinite(d["spread_T"])


def test_critical_keeps_a_set_value() -> None:
    d = json_of("critical", "--cell", "minimalrnn", "--T", "50", "--set", "nu=0.6")
    assert d["params"]["nu_u"] == 0.6 and d["params"]["nu_e"] == 0.6
    assert d["xi_c"] == pytest.approx(50.0, rel=0.01)


def test_map_writes_a_readable_png_and_the_grid(tmp_path: Path) -> None:
    from matplotlib.image import imread

    png, data = tmp_path / "sub" / "map.png", tmp_path / "map.json"
    result = run(
        "map",
        "--cell",
        "lstm",
        "--x",
        "mu_f:0:8:12",
        "--y",
        "nu:0.1:2:9",
        "--T",
        "100",
        "--set",
        "sigma=1",
        "--out",
        str(png),
        "--json-out",
        str(data),
    )
    assert result.exit_code == 0, stderr_of(result)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert float(np.var(imread(png)[..., :3])) > 0
    d = json.loads(data.read_text())
    xi = np.array(d["xi_c"], dtype=float)
    assert d["shape"] == [9, 12] and xi.shape == (9, 12)
    assert d["x"]["name"] == "mu_f" and len(d["x"]["values"]) == 12 and len(d["y"]["values"]) == 9
    assert np.all(np.diff(xi, axis=1) > 0), "ξ_C grows with the forget-gate bias"
    assert d["target_xi"] == 100.0 and (xi.min() < 100.0 < xi.max())


def test_help_lists_the_commands() -> None:
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0 and "theory" in top.stdout
    sub = runner.invoke(app, ["theory", "--help"])
    for name in ("fixed-point", "critical", "map", "report"):
        assert name in sub.stdout


def test_report_covers_every_cell_and_writes_the_map(tmp_path: Path) -> None:
    result = run("report", "--out", str(tmp_path))
    assert result.exit_code == 0, stderr_of(result)
    out = result.stdout
    for title in ("LSTM", "GRU", "minimalRNN", "vanilla"):
        assert title in out
    assert out.count("PyTorch default") >= 4 and out.count("critical, T = 1000") == 3
    assert "not reachable, ξ bounded" in out and "NOT converged" not in out
    png = tmp_path / "lstm_xi_map.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and str(png) in out


def test_console_entry_prints_json_without_matplotlib() -> None:
    """The real entry point, in a fresh interpreter; -X importtime lists every import on stderr."""
    args = ["theory", "fixed-point", *LSTM, "--json"]
    proc = isotune(*args, python_flags=["-X", "importtime"], timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = json.loads(proc.stdout)
    assert d["cell"] == "lstm" and math.isfinite(d["xi_c"])
    assert "matplotlib" not in proc.stderr, "theory fixed-point must not import matplotlib"


@pytest.mark.parametrize(
    "mode,text,reason",
    [
        (0o644, "tok", "readable by others (mode 644)"),
        (0o600, "  \n", "empty"),
        (None, "", "No such"),
    ],
)
def test_worker_token_file_is_refused_in_one_line(
    tmp_path: Path, mode: int | None, text: str, reason: str
) -> None:
    path = tmp_path / "token"
    if mode is not None:
        path.write_text(text)
        path.chmod(mode)
    result = runner.invoke(app, ["worker", "--study", "s", "--token-file", str(path)])
    assert result.exit_code == 2, result.output
    lines = stderr_of(result).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: token_file="), lines
    assert reason in lines[0]
