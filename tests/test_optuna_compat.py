"""The private Optuna names isotune relies on still exist and mean what they meant.

Every one is wrapped in ``service/optuna_compat.py``; an Optuna release that renames or changes
one fails here, naming it, before claims slow down or imports break in production.
"""

from __future__ import annotations

import ast
from pathlib import Path

import optuna
import pytest

from service import optuna_compat

ROOT = Path(__file__).resolve().parents[1]


def test_every_private_name_is_still_there() -> None:
    assert optuna_compat.check() == []


def test_optuna_is_the_major_version_tested() -> None:
    major = int(optuna.__version__.split(".")[0])
    assert 4 <= major < 6, f"optuna {optuna.__version__}: pyproject allows >=4,<6"


def test_skip_waiting_study_skips_only_when_told() -> None:
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage).enqueue_trial({"x": 0.5})
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    study = optuna_compat.SkipWaitingStudy(study_name="s", storage=storage)
    study.skip_waiting = True
    fresh = study.ask(dist)  # the queued trial is not looked for
    assert optuna_compat.trial_id(fresh) != 0 and fresh.number == 1
    study.skip_waiting = False
    assert study.ask(dist).params == {"x": 0.5}


@pytest.mark.parametrize("package", ["service", "workers", "cli", "contract", "meanfield"])
def test_no_private_optuna_name_outside_the_adapter(package: str) -> None:
    """Outside ``service/optuna_compat.py`` no module reaches into Optuna's private names."""
    private = {
        "_pop_waiting_trial_id",
        "_study_id",
        "_trial_id",
        "_validate",
        "_contains",
        "fixed_params",
    }
    for path in sorted((ROOT / package).rglob("*.py")):
        if path.name == "optuna_compat.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in private:
                pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno} uses .{node.attr}")
            if isinstance(node, ast.Constant) and node.value in private:
                pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value!r}")
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                if name.startswith(("optuna.storages._", "optuna._")):
                    pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
