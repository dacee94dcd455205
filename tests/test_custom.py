"""A user's own task, model and training loop, as the README shows them (its ``mytasks.py`` and
``myloop.py`` blocks, run as they stand): the task's bridge statistics measured by
``isotune task measure``, a study of the ``python`` task trained by a real worker process, and
the loop against a real server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from contract.client import Client
from contract.tasks import task_spec
from tests.support import ROOT
from tests.support.cli import isotune
from tests.support.servers import serve, worker

pytestmark = pytest.mark.slow  # real server and worker processes


def readme_files(into: Path) -> Path:
    """Write the README's ``# NAME.py`` python blocks into ``into``."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(# (\w+)\.py.*?)```", text, re.S)
    assert {name for _, name in blocks} >= {"mytasks", "myloop"}
    for code, name in blocks:
        (into / f"{name}.py").write_text(code)
    return into


def test_a_python_task_measured_trained_and_looped(tmp_path: Path) -> None:
    code = readme_files(tmp_path)
    env = {"PYTHONPATH": f"{code}{os.pathsep}{ROOT}"}
    measured = isotune("task", "measure", "--factory", "mytasks:make", "--T", "20",
                       "--prefix", "1", env=env)  # fmt: skip
    assert measured.returncode == 0, measured.stderr
    task = json.loads(measured.stdout)
    opts = task["options"]
    # one-hot symbol, then N(0, 1) noise: R = 1, independent examples, 4 classes
    assert (opts["input_size"], opts["n_outputs"], opts["loss"], opts["suffix"]) == (4, 4, "ce", 0)
    assert opts["regime"] == "independent" and abs(opts["R"] - 1) < 0.05 and opts["R_ab"] < 0.01
    assert task_spec("python", 20, **opts).seq_len == 21
    spec = {
        "name": "mine",
        "cell": "lstm",
        "task": task,
        "space": {"mu_f": {"type": "float", "low": 0.0, "high": 6.0},
                  "lr": {"type": "float", "low": 3e-3, "high": 1e-2, "log": True}},
        "budget": 3,
        "pruner": "none",
        "training": {"hidden": 16, "batch_size": 16, "steps": 40, "eval_every": 20,
                     "eval_size": 32},
    }  # fmt: skip
    with serve(f"sqlite:///{tmp_path / 'c.db'}") as server, Client(server.base) as c:
        made = c.create_study(spec)
        assert made["spec"]["prior"]["mode"] == "restrict"  # mu_f searched: the default prior
        with worker(server.base, "w", "mine", max_trials=2, env=env) as w:
            assert w.wait(timeout=240) == 0, w.output()
        states = [t["state"] for t in c.trials("mine")["trials"]]
        assert states == ["COMPLETE", "COMPLETE"], w.output()
        # the README's own loop takes the rest of the budget
        loop = subprocess.run(
            [sys.executable, str(code / "myloop.py")], cwd=code, capture_output=True, text=True,
            timeout=240, env={**os.environ, **env, "ISOTUNE_SERVER": server.base,
                              "ISOTUNE_STUDY": "mine"},
        )  # fmt: skip
        assert loop.returncode == 0, loop.stderr
        trials = c.trials("mine")["trials"]
        assert [t["state"] for t in trials] == ["COMPLETE"] * 3
        assert trials[2]["user_attrs"]["isotune_worker"] == "my-loop"
        assert 0.0 <= trials[2]["value"] <= 1.0 and trials[2]["intermediate_values"]
