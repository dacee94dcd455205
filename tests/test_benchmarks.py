"""Every benchmark script runs from a checkout with one command and writes its report.

Each runs here at a toy size (the published reports come from the default sizes, see
``benchmarks/README.md``); the assertions check the report's content, not its speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import run_script

pytestmark = pytest.mark.slow


def bench(script: str, out: Path, *args: str, timeout: float = 300) -> None:
    log = out / f"{script}.log"
    rc = run_script([f"benchmarks/{script}.py", "--out", str(out), *args], log, timeout)
    assert rc == 0, log.read_text()[-3000:]


def test_jacobian_spectrum(tmp_path: Path) -> None:
    bench("jacobian_spectrum", tmp_path, "--quick")
    report = json.loads((tmp_path / "jacobian_spectrum.json").read_text())
    assert set(report["cases"]) == {"lstm", "gru", "minimalrnn"}
    for cell, entry in report["cases"].items():
        # The explicit step that autograd differentiates is the module's own forward pass.
        assert entry["step_check"] < 1e-12, cell
        one_step = entry["untied"]["32"]["mean_ratio"][0]  # T = 1: E[λ] = m₁ to sampling error
        assert abs(one_step - 1) < 0.1, (cell, one_step)
    for png in ("jacobian_spectrum_hist.png", "jacobian_spectrum_width.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Where the prediction first fails" in (tmp_path / "jacobian_spectrum.md").read_text()


def test_hpo_efficiency_reports_every_arm_and_a_refusal(tmp_path: Path) -> None:
    """Arms d and f at toy size, with c so small that the restricted space is empty."""
    bench("hpo_efficiency", tmp_path, "--seeds", "1", "--trials", "2", "--steps", "20",
          "--arms", "df", "--c-scale", "0.01", "--workers", "1")  # fmt: skip
    report = json.loads((tmp_path / "hpo_efficiency.json").read_text())
    assert "restricted region is empty" in report["refused"]["d"]
    assert report["feasible_share"] == 0.0
    (run,) = report["arms"]["f"]["runs"]
    assert len(run["best_curve"]) == 2 and 0.0 <= run["trained"] <= 1.0
    assert {"first_trained", "trials_to_target", "best"} <= set(run)
    md = (tmp_path / "hpo_efficiency.md").read_text()
    assert "refused at creation" in md
    # the arm's row carries its numbers: trained share, best, first trained, to target
    (row,) = [line for line in md.splitlines() if line.startswith("| f: ")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[1]) == run["trained"] and len(cells) == 6, row
    assert (tmp_path / "hpo_efficiency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hpo_efficiency_full_space_chrono_and_hyperband(tmp_path: Path) -> None:
    """The practitioner's space (per-gate bias means, nu, sigma, rho, lr) on the copy task with
    Hyperband, TPE without the prior (b) and chrono init (k) against restrict (d): the training
    steps each trial ran are counted, pruned trials with what they ran, and the report sets the
    theory arm's steps to target against both baselines."""
    bench("hpo_efficiency", tmp_path, "--seeds", "1", "--trials", "3", "--steps", "20",
          "--arms", "bkd", "--workers", "1", "--space", "full", "--task", "copy", "--T", "10",
          "--pruner", "hyperband", "--target", "0.99")  # fmt: skip
    report = json.loads((tmp_path / "hpo_efficiency.json").read_text())
    assert 0.0 < report["feasible_share"] < 1.0
    for arm in ("b", "k"):
        (run,) = report["arms"][arm]["runs"]
        ran = [b - a for a, b in zip([0, *run["steps_curve"]], run["steps_curve"], strict=False)]
        assert len(ran) == 3 and all(0 < r <= 20 for r in ran), run
        assert [t["steps"] for t in run["trials"]] == ran  # every trial kept, as it ran
        assert all("lr" in t["params"] for t in run["trials"])
        if run["trials_to_target"] != float("inf"):
            assert run["steps_to_target"] == run["steps_curve"][run["trials_to_target"] - 1]
    md = (tmp_path / "hpo_efficiency.md").read_text()
    assert "mu_i ∈ [-3, 3]" in md and "rho ∈ [0, 1]" in md and "pruner hyperband" in md
    assert "| k: chrono init, TPE over lr |" in md
    # the cost per arm, and the theory arm against b and k (the targets)
    (cost,) = [line for line in md.splitlines() if line.startswith("| d | ")]
    assert float(cost.strip("|").split("|")[-1]) >= 0.0
    assert report["arms"]["d"]["runs"][0]["seconds"] > 0.0
    rows = [line.split("|") for line in md.splitlines() if line.startswith("| d: TPE, prior")]
    against = [row[2].strip()[:2] for row in rows if row[2].strip()[:2] in ("b:", "k:")]
    assert against == ["b:", "k:"], rows
    # an arm rerun with the same settings replaces its row (--render --add); other settings refuse
    rerun = {**report, "arms": {"b": {**report["arms"]["b"], "label": "rerun b"}}}
    (tmp_path / "rerun.json").write_text(json.dumps(rerun))
    bench("hpo_efficiency", tmp_path, "--render", str(tmp_path / "hpo_efficiency.json"),
          "--add", str(tmp_path / "rerun.json"))  # fmt: skip
    md = (tmp_path / "hpo_efficiency.md").read_text()
    assert "| b: rerun b |" in md and "Arms b come from a second run" in md
    (tmp_path / "other.json").write_text(json.dumps({**rerun, "args": {**rerun["args"], "T": 11}}))
    log = tmp_path / "refused.log"
    main = str(tmp_path / "hpo_efficiency.json")
    rc = run_script(["benchmarks/hpo_efficiency.py", "--render", main,
                     "--add", str(tmp_path / "other.json")], log, 60)  # fmt: skip
    assert rc != 0 and "run with other settings (T)" in log.read_text()


def test_hpo_efficiency_second_studies_start_from_the_first(tmp_path: Path) -> None:
    """Arm j (soft, calibrated from the seed's h study) runs after arm h and says so; both are
    calibrated on their outcomes, and the report lists them. Arm n starts from a study at a
    shorter T run before it (``--source-T``), whose cost the run records."""
    bench("hpo_efficiency", tmp_path, "--seeds", "1", "--trials", "2", "--steps", "20",
          "--arms", "hjn", "--workers", "1", "--source-T", "10", "--source-trials", "2",
          "--source-steps", "20")  # fmt: skip
    report = json.loads((tmp_path / "hpo_efficiency.json").read_text())
    (first,) = report["arms"]["h"]["runs"]
    (second,) = report["arms"]["j"]["runs"]
    assert first["calibration"]["sources"] == []
    assert second["calibration"]["sources"] == ["h-s0"]
    assert second["calibration"]["source_outcomes"] == first["calibration"]["outcomes"] == 2
    (sourced,) = report["arms"]["n"]["runs"]
    assert sourced["calibration"]["sources"] == ["src-s0"], sourced["calibration"]
    assert sourced["calibration"]["source_outcomes"] == 2
    assert sourced["source"]["T"] == 10 and 0 < sourced["source"]["steps"] <= 40
    md = (tmp_path / "hpo_efficiency.md").read_text()
    assert "| j | " in md and "h-s0" in md and "src-s0" in md


def test_trainability_c_trains_resumes_and_fits(tmp_path: Path) -> None:
    """A toy matrix: every run recorded once (a second invocation trains none), one fitted group
    with its profile intervals and held-out scores, and the report's table row."""
    toy = ["--tasks", "copy", "--cells", "lstm", "--steps", "20", "--T", "10",
           "--ratios", "0.5,40", "--seeds", "2", "--workers", "1"]  # fmt: skip
    bench("trainability_c", tmp_path, *toy)
    runs = (tmp_path / "trainability_c.runs.jsonl").read_text().splitlines()
    assert len(runs) == 2 * 2 * 2  # ratios × nu (0.7, 1.4) × seeds
    bench("trainability_c", tmp_path, *toy)
    assert len((tmp_path / "trainability_c.runs.jsonl").read_text().splitlines()) == len(runs)
    (fit,) = json.loads((tmp_path / "trainability_c.json").read_text())["fits"]
    assert (fit["task"], fit["cell"], fit["steps"], fit["runs"]) == ("copy", "lstm", 20, 8)
    assert fit["c95"][0] <= fit["c68"][0] <= fit["c"] <= fit["c68"][1] <= fit["c95"][1]
    assert 0.0 <= fit["held_out"]["model_xi_jac"]["accuracy"] <= 1.0
    assert "| copy | lstm | 20 | 10 | 8 (" in (tmp_path / "trainability_c.md").read_text()


def test_rest_share(tmp_path: Path) -> None:
    bench("rest_share", tmp_path, "--trials", "1", "--steps", "20", "--eval-every", "10")
    report = json.loads((tmp_path / "rest_share.json").read_text())
    (trial,) = report["trials"]
    assert trial["calls"] == 4  # claim, two reports, complete
    assert 0 < trial["rest"] < trial["wall"]
    # the log rounds wall to 0.1 s and share to 0.01 %: equal within that rounding
    assert trial["share"] == pytest.approx(100 * trial["rest"] / trial["wall"], rel=0.05, abs=0.02)


def test_prior_strategies(tmp_path: Path) -> None:
    bench("prior_strategies", tmp_path, "--seeds", "2", "--trials", "6")
    assert (tmp_path / "prior_strategies.md").exists()
    assert json.loads((tmp_path / "prior_strategies.json").read_text())


def test_theory_speed(tmp_path: Path) -> None:
    bench("theory_speed", tmp_path, "--grid", "8", "--repeats", "1", "--naive-points", "2",
          "--checks", "10", "--cells", "64")  # fmt: skip
    assert (tmp_path / "theory_speed.md").exists()


def test_suite_cpu(tmp_path: Path) -> None:
    """The suite's CPU profile, on one small test file: every test counted, its CPU accounted."""
    bench("suite_cpu", tmp_path, "--workers", "0", "--", "tests/test_layout.py")
    report = json.loads((tmp_path / "suite_cpu.json").read_text())
    assert report["returncode"] == 0 and " passed" in report["pytest"], report["pytest"]
    (entry,) = report["per_file"].values()
    assert list(report["per_file"]) == ["tests/test_layout.py"] and entry["tests"] > 10
    assert report["cpu_s"] >= report["tests_own_s"] + report["tests_children_s"] > 0
    assert "| tests/test_layout.py |" in (tmp_path / "suite_cpu.md").read_text()


def test_train_speed(tmp_path: Path) -> None:
    bench("train_speed", tmp_path, "--T", "10", "--hidden", "16", "--batch", "8", "--steps", "2",
          "--device", "cpu", "--threads", "1", "--denormal-repeats", "1",
          "--denormal-steps", "3")  # fmt: skip
    report = json.loads((tmp_path / "train_speed_cpu.json").read_text())
    # flushing denormals changes no result: the two learning curves are the same
    assert report["denormal"]["max_loss_diff"] < 1e-6
    assert report["denormal"]["flush_s"] > 0 and report["denormal"]["keep_s"] > 0
    assert "denormal floats flushed to zero" in (tmp_path / "train_speed_cpu.md").read_text()
