"""docker-compose.yml and the Dockerfiles, checked without a Docker engine (none runs here): the
services, their wiring, and every ``isotune`` command in them parsed by the real command line."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.support.cli import parse_command as parse

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def substitute(words: list[str]) -> list[str]:
    """Compose's ``${VAR:?message}`` / ``${VAR}`` with a placeholder value."""
    return [re.sub(r"\$\{[A-Z_]+(:\?[^}]*)?\}", "placeholder", w) for w in words]


WORKERS = {"worker-gpu0": "0", "worker-gpu1": "1", "worker-cpu": None}


def test_services_and_wiring() -> None:
    assert set(SERVICES) == {"postgres", "migrate", "server", "dashboard", *WORKERS}
    pg = SERVICES["postgres"]
    assert pg["image"].startswith("postgres:") and "pg_isready" in " ".join(
        pg["healthcheck"]["test"]
    )
    assert "pgdata:/var/lib/postgresql/data" in pg["volumes"]
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("server", "dashboard"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    # published on the host's loopback: tokens cross no network in plain HTTP (README: TLS)
    assert SERVICES["server"]["ports"] == ["127.0.0.1:8000:8000"]
    assert SERVICES["dashboard"]["ports"] == ["127.0.0.1:8080:8080"]
    # published beyond loopback, so never without tokens (tests/test_server.py checks the gate)
    for name in ("server", "dashboard"):
        assert "--no-auth" not in SERVICES[name]["command"]
    assert "artifacts:/artifacts" in SERVICES["dashboard"]["volumes"]
    assert set(COMPOSE["volumes"]) == {"pgdata", "artifacts"}
    for name, gpu in WORKERS.items():
        worker = SERVICES[name]
        assert worker["image"] == "isotune-worker" and "build" in worker, name
        assert worker["depends_on"]["server"]["condition"] == "service_healthy"
        assert worker["environment"]["ISOTUNE_SERVER"] == "http://server:8000"
        # a worker whose study is done exits 0 and stays down; a failing one is retried
        assert worker["restart"].startswith("on-failure"), name
        # the token and the study are read when a worker starts, so that every other compose
        # command (the one that creates the token among them) runs without them
        for var in ("ISOTUNE_TOKEN", "ISOTUNE_STUDY"):
            assert worker["environment"][var] == f"${{{var}:-}}", (name, var)
        assert worker["profiles"] == (["cpu"] if gpu is None else ["gpu"])
        if gpu is not None:  # one GPU each, by id: --scale would share one
            devices = worker["deploy"]["resources"]["reservations"]["devices"]
            assert devices == [{"driver": "nvidia", "device_ids": [gpu], "capabilities": ["gpu"]}]
        else:
            assert "deploy" not in worker and "container_name" not in worker  # --scale is fine
    # nothing but the database password is required of every compose command
    required = set(re.findall(r"\$\{([A-Z_]+):\?", (ROOT / "docker-compose.yml").read_text()))
    assert required == {"ISOTUNE_DB_PASSWORD"}
    # one database URL for everyone, and the server image has no torch (the worker's has)
    users = ("migrate", "server", "dashboard")
    urls = {SERVICES[n]["environment"]["ISOTUNE_DATABASE_URL"] for n in users}
    assert len(urls) == 1 and next(iter(urls)).startswith("postgresql+psycopg://isotune:")
    server_image = (ROOT / "docker/server.Dockerfile").read_text()
    worker_image = (ROOT / "docker/worker.Dockerfile").read_text()
    installs = [line for line in server_image.splitlines() if "pip install" in line]
    assert installs and all("'.[service]'" in x and "worker" not in x for x in installs)
    assert "'.[worker]'" in worker_image and re.search(r"FROM pytorch/pytorch:.*cuda", worker_image)


@pytest.mark.parametrize("name", ["migrate", "server", "dashboard", *WORKERS])
def test_compose_commands_parse(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in SERVICES[name].get("environment", {}):  # as compose passes them
        monkeypatch.setenv(var, "placeholder")
    words = substitute(SERVICES[name]["command"])
    assert words[0] == "isotune"
    ctx = parse(words[1:])
    if name == "server":
        assert ctx.params["host"] == "0.0.0.0" and ctx.params["workers"] >= 2
    if name in WORKERS:
        assert ctx.params["device"] == ("cpu" if WORKERS[name] is None else "cuda")
        # the token, the server and the study come from the environment, as the CLI reads them
        options = {o.name: o for o in ctx.command.params}
        assert options["token"].envvar == "ISOTUNE_TOKEN"
        assert options["server"].envvar == "ISOTUNE_SERVER"
        assert options["study"].envvar == "ISOTUNE_STUDY"


@pytest.mark.parametrize("dockerfile", ["server.Dockerfile", "worker.Dockerfile"])
def test_dockerfile_commands_parse(dockerfile: str) -> None:
    text = (ROOT / "docker" / dockerfile).read_text()
    cmd = yaml.safe_load(re.search(r"^CMD (.*)$", text, re.M).group(1))  # JSON array form
    assert cmd[0] == "isotune"
    if "--help" not in cmd:
        parse(cmd[1:])


def test_the_parser_refuses_what_the_cli_refuses() -> None:
    """The check above is not vacuous."""
    with pytest.raises(Exception, match="No such option"):
        parse(shlex.split("serve --no-such-option 1"))
    with pytest.raises(AssertionError, match="no such command"):
        parse(["no-such-command"])
    with pytest.raises(Exception, match="valid integer"):
        parse(shlex.split("serve --port not-a-number"))
