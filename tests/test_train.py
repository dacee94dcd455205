"""The training loop, the ``isotune train`` command and the trainability map (tiny runs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.support.cli import isotune
from workers.train import TrainConfig, TrainError, train
from workers.trainmap import MapRun, fit_boundary, success_threshold

TINY = {"hidden": 16, "batch_size": 8, "steps": 6, "eval_every": 3, "eval_size": 16, "threads": 1}


def test_train_reproducible_and_reports() -> None:
    cfg = TrainConfig(task="copy", T=5, cell="lstm", init="critical", seed=3, **TINY)
    a, b = train(cfg), train(cfg)
    assert [r["train_loss"] for r in a.curve] == [r["train_loss"] for r in b.curve]
    assert [r["step"] for r in a.curve] == [3, 6]
    assert a.stopped == "completed"
    assert a.init_params is not None and a.init_params["mu_f"] > 0
    assert a.xi_c is not None and a.xi_c == pytest.approx(5.0, rel=1e-3)  # ξ_C = T/c, c = 1
    c = train(TrainConfig(task="copy", T=5, cell="lstm", init="critical", seed=4, **TINY))
    assert [r["train_loss"] for r in c.curve] != [r["train_loss"] for r in a.curve]
    payload = json.loads(json.dumps(a.to_dict()))
    assert payload["config"]["T"] == 5 and payload["task"]["name"] == "copy"
    assert 0.0 <= payload["final"]["test_accuracy"] <= 1.0


@pytest.mark.parametrize("cell", ["lstm", "gru", "minimalrnn", "vanilla"])
def test_every_cell_trains_a_step(cell: str) -> None:
    init = "default" if cell == "vanilla" else "critical"
    res = train(TrainConfig(task="adding", T=4, cell=cell, init=init, **TINY))
    assert all(math.isfinite(r["train_loss"]) for r in res.curve)
    assert res.task["loss"] == "mse"


def test_callback_stops_the_run() -> None:
    seen: list[int] = []

    def callback(report: dict[str, float]) -> bool:
        seen.append(int(report["step"]))
        return False  # prune at the first report

    res = train(TrainConfig(task="copy", T=3, **TINY), callback)
    assert seen == [3] and res.stopped == "callback" and res.final["steps"] == 3


def test_custom_init_is_applied() -> None:
    res = train(TrainConfig(task="copy", T=3, init={"mu_f": 2.5, "nu": 0.5}, **TINY))
    assert res.init_params is not None
    assert res.init_params["mu_f"] == 2.5 and res.init_params["nu_i"] == 0.5


@pytest.mark.parametrize(
    ("field", "value"),
    [("T", 0), ("lr", -1.0), ("optimizer", "adamw"), ("steps", 0), ("init", "magic")],
)
def test_bad_settings_name_field_and_value(field: str, value: object) -> None:
    with pytest.raises(TrainError) as e:
        train(TrainConfig(**{**TINY, field: value}))
    assert e.value.field == field and str(value) in str(e.value)


@pytest.mark.slow
def test_cli_train_prints_a_learning_curve() -> None:
    r = isotune(
        "train", "--task", "copy", "--T", "5", "--cell", "gru", "--hidden", "16",
        "--batch-size", "8", "--steps", "4", "--eval-every", "2", "--eval-size", "16",
        "--threads", "1", "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "step" in r.stdout and "test accuracy" in r.stdout and "ξ_C" in r.stdout
    assert len([ln for ln in r.stdout.splitlines() if ln.split()[:1] in (["2"], ["4"])]) == 2


@pytest.mark.slow
def test_cli_train_json_and_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    r = isotune(
        "train", "--task", "adding", "--T", "3", "--init", "default", "--hidden", "8",
        "--batch-size", "4", "--steps", "2", "--eval-every", "1", "--eval-size", "8", "--json",
        "--out", str(out), "--threads", "1",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["init_params"] is None
    assert json.loads(out.read_text())["config"]["init"] == "default"
    bad = isotune("train", "--task", "copy", "--T", "-4", "--steps", "1")
    assert bad.returncode == 2 and "T=-4" in bad.stderr and "Traceback" not in bad.stderr
    bad = isotune("train", "--task", "nope", "--steps", "1")
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr


def _synthetic_runs(c_true: float, noise: float, seed: int = 0) -> list[MapRun]:
    rng = np.random.default_rng(seed)
    runs = []
    for xi in np.geomspace(1, 1000, 12):
        for T in np.geomspace(5, 2000, 10):
            trained = bool(T <= c_true * xi) != bool(rng.random() < noise)
            runs.append(MapRun(1.0, int(T), 0, float(xi), float(trained), 1.0, 0.1, trained, 0.0))
    return runs


def test_fit_boundary_recovers_the_constant() -> None:
    b = fit_boundary(_synthetic_runs(3.0, noise=0.0), bootstrap=50)
    assert b.accuracy == 1.0
    assert 1.5 < b.c < 6.0  # the grid's resolution around c = 3
    assert b.c_interval[0] <= b.c <= b.c_interval[1]
    noisy = fit_boundary(_synthetic_runs(3.0, noise=0.1), bootstrap=50)
    assert 0.8 < noisy.accuracy < 1.0 and 1.0 < noisy.c < 9.0


def test_success_threshold() -> None:
    assert success_threshold(0.1) == pytest.approx(0.55)
    assert success_threshold(0.0) == 0.5


@pytest.mark.slow
def test_cli_trainability_map_writes_report(tmp_path: Path) -> None:
    r = isotune(
        "trainability-map", "--task", "copy", "--cell", "lstm", "--values", "0,3",
        "--T", "3,6", "--seeds", "1", "--hidden", "8", "--steps", "3", "--batch-size", "4",
        "--eval-every", "3", "--workers", "2", "--headline-T", "3", "--out", str(tmp_path),
        "--name", "m",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "m.json").read_text())
    assert len(data["runs"]) == 4 and data["param"] == "mu_f"
    assert {row["T"] for row in data["headline"]} == {3}
    assert (tmp_path / "m.png").stat().st_size > 10_000
    md = (tmp_path / "m.md").read_text()
    assert "Fitted constant" in md and "Default against critical" in md
