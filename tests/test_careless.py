"""What a careless user does on the first day, through real processes: every mistake ends in
``error: field=value: reason`` lines and exit 2, never a traceback, and burns no budget.

- a study deleted in optuna-dashboard (the Optuna study gone under isotune's record);
- the CLI against a server that refuses (401, 404, 422) or does not answer, a spec file that is
  missing or not YAML;
- a worker pointed at a wrong URL, or asked for a device the machine lacks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from contract.client import Client
from tests.support import ROOT, specs
from tests.support.cli import isotune
from tests.support.ports import free_port
from tests.support.servers import REAP_INTERVAL, serve, wait_for

pytestmark = pytest.mark.slow  # real servers, workers and command lines


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]


def test_a_study_deleted_in_the_dashboard_leaves_the_others_usable(db_url: str) -> None:
    """What optuna-dashboard's delete does (``optuna.delete_study``) under a running server: the
    other studies list and work, the orphan shows as such and refuses claims (409), an admin
    deletes it, and the reaper says so once instead of a traceback every pass."""
    with serve(db_url) as server, Client(server.base, retry_seconds=5) as c:
        for name in ("gone", "kept"):
            c.create_study(specs.api(name=name, lease_seconds=0.5))
        c.claim("gone", "w1")  # a lease the reaper will find expired
        storage = optuna.storages.RDBStorage(db_url)  # as optuna-dashboard deletes a study
        try:
            optuna.delete_study(study_name="gone", storage=storage)
        finally:
            storage.engine.dispose()

        def states() -> dict[str, str]:
            return {s["name"]: s["state"] for s in c.studies()}

        # the reaper's first pass over the orphan marks it (however busy the machine), then a few
        wait_for(lambda: states()["gone"] == "orphaned", 60, "the reaper to find the orphan")
        time.sleep(3 * REAP_INTERVAL)  # more passes: it must not warn again at each
        assert states() == {"gone": "orphaned", "kept": "active"}
        listed = isotune("study", "list", "--server", server.base)
        assert listed.returncode == 0 and "gone" in listed.stdout, listed.stderr
        refused = isotune("study", "show", "gone", "--server", server.base)
        no_traceback(refused.stderr)
        claimed = c.http.post(f"{c.base}/studies/gone/claim", json={"worker_id": "w2"})
        assert claimed.status_code == 409 and claimed.json()["field"] == "study", claimed.text
        assert c.claim("kept", "w2")["status"] == "assigned"
        deleted = isotune("study", "delete", "gone", "--server", server.base)
        assert deleted.returncode == 0, deleted.stderr
        assert [s["name"] for s in c.studies()] == ["kept"]
        log = server.output()
    no_traceback(log)
    assert log.count("skipped by the reaper") <= 1, log[-2000:]


def test_cli_mistakes_end_in_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    made = isotune("token", "create", "--role", "reader", "--name", "r", "--database-url", url)
    reader = made.stdout.strip()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps(specs.api(training={"hiden": 64}, name="typo")))
    missing, empty = tmp_path / "missing.db", tmp_path / "empty.db"
    empty.touch()
    with serve(url, auth=True) as server:
        base = ["--server", server.base]
        port = server.base.rsplit(":", 1)[1]
        cases = {
            "no token": (["study", "list", *base], "authorization"),
            "reader creates": (
                ["study", "create", "-f", str(spec), *base, "--token", reader], "authorization"),
            "unknown study": (["study", "show", "nope", *base, "--token", reader], "study='nope'"),
            "missing file": (["study", "create", "-f", str(tmp_path / "no.yaml"), *base], "file="),
            "broken yaml": (["study", "create", "-f", str(bad), *base], "file="),
            "no server": (["study", "list", "--server", "http://127.0.0.1:9"], "server="),
            "plot, no database": (
                ["study", "plot", "s", "--artifact-dir", str(tmp_path / "a"),
                 "--database-url", f"sqlite:///{missing}", *base], "database_url="),
            "tokens, no database": (["token", "list", "--database-url", f"sqlite:///{missing}"],
                                    "database_url="),
            "tokens, not isotune's": (["token", "list", "--database-url", f"sqlite:///{empty}"],
                                      "no isotune tables"),
            # the port is taken: one line before any banner
            "port in use": (["serve", "--port", port, "--no-auth",
                             "--database-url", f"sqlite:///{tmp_path / 'other.db'}"], "port="),
            "dashboard port in use": (["dashboard", "--port", port, "--no-auth",
                                       "--database-url", url], "port="),
        }  # fmt: skip
        for what, (args, named) in cases.items():
            r = isotune(*args)
            assert r.returncode == 2, (what, r.stdout, r.stderr)
            no_traceback(r.stderr)
            assert r.stderr.startswith("error: ") and named in r.stderr, (what, r.stderr)
    assert not missing.exists() and not (tmp_path / "a").exists()  # nothing made by mistake
    tokens = isotune("token", "list", "--database-url", url).stdout.splitlines()
    assert tokens[0].split() == ["name", "role", "created", "(UTC)", "revoked", "(UTC)"]
    assert tokens[1].split()[:2] == ["r", "reader"] and tokens[1].endswith("  -"), tokens
    assert reader not in "\n".join(tokens)  # never the token itself


def test_a_typo_in_training_is_a_422_naming_it_from_the_cli(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps(specs.api(training={"hiden": 64}, name="typo")))
    with serve(url) as server:
        r = isotune("study", "create", "-f", str(spec), "--server", server.base)
        assert r.returncode == 2 and "training.hiden=64: not a training setting" in r.stderr
        no_traceback(r.stderr)
        with Client(server.base) as c:
            assert c.studies() == []  # nothing stored


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--server", "http://127.0.0.1:9"], "server=http://127.0.0.1:9: cannot connect"),
        (["--server", "http://127.0.0.1:9", "--device", "cuda"], "device=cuda: CUDA is not"),
    ],
)
def test_a_worker_that_cannot_work_says_why_in_seconds(args: list[str], named: str) -> None:
    """A wrong URL or a missing device: exit 2 before any claim, not after the retry window
    (the worker's retries are for a server that answered before). The window is an hour and the
    bound a tenth of it: a process start (torch included) that a loaded machine stretches tenfold
    still passes, a worker that waits out its retries does not."""
    t0 = time.monotonic()
    r = isotune("worker", "--study", "s", "--retry-seconds", "3600", *args, timeout=600)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {named}"), r.stderr
    no_traceback(r.stderr)
    assert time.monotonic() - t0 < 360


def test_a_worker_accepts_the_url_the_server_prints(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'u.db'}"
    with serve(url) as server, Client(server.base) as c:
        c.create_study(specs.api(budget=1))
        r = isotune("worker", "--server", server.base + "/api/v1", "--study", "s1",
                    "--device", "cpu", "--threads", "1", "--max-trials", "1",
                    timeout=240)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert c.study("s1")["n_trials"] == 1


def readme_spec() -> str:
    """The ``spec.yaml`` the README's service section writes (``$ cat > spec.yaml <<'EOF'``)."""
    text = (ROOT / "README.md").read_text()
    head = "$ cat > spec.yaml <<'EOF'\n"
    start = text.index(head) + len(head)
    return text[start : text.index("\nEOF\n", start)] + "\n"


def test_the_readme_spec_gets_the_prior_and_off_is_explicit(tmp_path: Path) -> None:
    """The README's first spec names no prior and searches ``mu_f``: the study is restricted
    (every trial handed out is predicted trainable); ``prior: {mode: off}`` is kept as asked, and
    a space without initialization hyperparameters gets no prior."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(readme_spec())
    off = tmp_path / "off.yaml"
    off.write_text(
        readme_spec().replace("name: lstm-copy-300", "name: off") + "prior: {mode: off}\n"
    )
    plain = tmp_path / "plain.yaml"
    plain.write_text(json.dumps(specs.api(name="plain", space={"lr": specs.API["space"]["lr"]})))
    with serve(f"sqlite:///{tmp_path / 'r.db'}") as server, Client(server.base) as c:
        for f in (spec, off, plain):
            made = isotune("study", "create", "-f", str(f), "--server", server.base)
            assert made.returncode == 0, made.stderr
        modes = {s["name"]: s["spec"]["prior"]["mode"] for s in c.studies()}
        assert modes == {"lstm-copy-300": "restrict", "off": "off", "plain": "off"}, modes
        for n in range(3):
            theory = c.claim("lstm-copy-300", f"w{n}")["trial"]["theory"]
            assert theory["mode"] == "restrict" and theory["predicted_trainable"], theory


def test_a_study_renamed_in_the_dashboard_is_adopted(db_url: str) -> None:
    """optuna-dashboard's rename (a copy under the new name, the old one deleted) leaves the
    study orphaned; ``isotune study adopt`` re-attaches it to the copy, which carries the search
    on under its new name with its trials; adopting a study that is not orphaned is a 409."""
    with serve(db_url) as server, Client(server.base, retry_seconds=5) as c:
        c.create_study(specs.api(name="old", budget=4))
        first = c.claim("old", "w")["trial"]
        c.complete(first["trial_id"], "w", 0.5)
        c.claim("old", "w2")  # running at the rename
        storage = optuna.storages.RDBStorage(db_url)
        try:  # what the dashboard's rename does
            optuna.copy_study(from_study_name="old", from_storage=storage, to_storage=storage,
                              to_study_name="new")  # fmt: skip
            optuna.delete_study(study_name="old", storage=storage)
        finally:
            storage.engine.dispose()
        assert c.studies()[0]["state"] == "orphaned"
        r = isotune("study", "adopt", "old", "--optuna-study", "new", "--server", server.base)
        assert r.returncode == 0 and "study new is active again, 2 trials" in r.stdout, r.stderr
        assert [(s["name"], s["state"]) for s in c.studies()] == [("new", "active")]
        assert c.study("new")["best"]["value"] == 0.5
        nxt = c.claim("new", "w3")
        assert nxt["status"] == "assigned" and nxt["trial"]["number"] == 2, nxt
        again = isotune("study", "adopt", "new", "--server", server.base)
        assert again.returncode == 2 and again.stderr.startswith(
            "error: study='new': is not orphaned"
        )
        no_traceback(again.stderr)
        no_traceback(server.output())


def readme_walkthrough() -> list[tuple[str, list[str]]]:
    """The README's service walk-through (the console block from ``source .venv/bin/activate``):
    each command (continuation lines and here-documents included) with the lines shown after it."""
    text = (ROOT / "README.md").read_text()
    start = text.index("$ source .venv/bin/activate\n")
    lines = text[start : text.index("\n```", start)].splitlines()
    steps: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(lines):
        command = [lines[i][2:]]
        heredoc = command[0].endswith("<<'EOF'")
        while command[-1].endswith("\\") or (heredoc and command[-1] != "EOF"):
            i += 1
            command.append(lines[i])
        i += 1
        shown = []
        while i < len(lines) and not lines[i].startswith("$ "):
            shown.append(lines[i])
            i += 1
        steps.append(("\n".join(command), shown))
    return steps


def test_the_readme_service_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """Every command of the README's service walk-through, copied as it stands (its folder and port
    moved to free ones, the server's banner to a file), runs in bash; what the README shows for
    the calls whose answers do not depend on random draws is what they print."""
    port = str(free_port())
    steps = readme_walkthrough()
    script = ["set -euo pipefail", f"cd {tmp_path}"]
    for n, (command, _) in enumerate(steps):
        command = command.replace("/tmp/svcdemo", str(tmp_path / "svc")).replace("8765", port)
        if command == "source .venv/bin/activate":
            command = f"export PATH={Path(sys.executable).parent}:$PATH"
        script.append(f"echo '::: {n}'")
        script.append(command)
        if command.startswith("isotune serve"):  # a person waits for the banner: so does this
            banner = tmp_path / "server.log"  # (the server must not hold the captured output)
            script[-1] = command.removesuffix("&") + f"> {banner} 2>&1 &"
            script.append(f"echo $! > {tmp_path}/server.pid")
            script.append(f"for i in $(seq 600); do curl -s -o /dev/null http://127.0.0.1:{port}"
                          "/api/v1/health && break; sleep 0.2; done")  # fmt: skip
            script.append(f"curl -sf -o /dev/null http://127.0.0.1:{port}/api/v1/health"
                          " || { echo 'the server did not come up' >&2; exit 1; }")  # fmt: skip
    pid_file = tmp_path / "server.pid"
    try:
        run = subprocess.run(["bash", "-c", "\n".join(script)], capture_output=True, text=True,
                             timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    no_traceback(run.stderr)
    parts = re.split(r"::: (\d+)\n", run.stdout)  # curl prints no newline at its end
    printed = dict(zip(parts[1::2], parts[2::2], strict=True))
    exact = 0
    for n, (command, shown) in enumerate(steps):
        got = printed.get(str(n), "").strip()
        if command.startswith("curl") and "/claim" in command:
            assert json.loads(got)["trial"]["theory"]["mode"] == "restrict", got
        elif shown and any(
            k in command for k in ("/report", "/complete", "study list", "/studies")
        ):
            assert got == "\n".join(shown).strip(), (command, got)
            exact += 1
    assert exact == 4  # the report, the completion, the other completion (409), the list
