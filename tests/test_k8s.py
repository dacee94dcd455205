"""deploy/k8s, checked without a cluster (none runs here): every manifest against the Kubernetes
schemas that ``kubernetes-validate`` ships (strict: an unknown field is an error), the kustomize
trees resolve to files that exist, the wiring a user relies on (probes on routes the server has,
the worker Job in the work-queue pattern with one GPU a pod, secrets by key), and every
``isotune`` command in them parsed by the real command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.api.routes.ops import v1 as ops_routes
from tests.support import ROOT
from tests.support.cli import parse_command

K8S = ROOT / "deploy" / "k8s"
#: The Kubernetes version whose schemas the manifests are checked against (the newest shipped).
VERSION = kubernetes_validate.latest_version()


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """The resources a ``kubectl apply -k folder`` would create (files and bases, recursively;
    the image names are left as written)."""
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert kust["kind"] == "Kustomization", folder
    docs: list[dict[str, Any]] = []
    for entry in kust["resources"]:
        path = (folder / entry).resolve()
        assert path.exists(), f"{folder}: {entry} does not exist"
        if path.is_dir():
            docs += kustomize(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (c,) = doc["spec"]["template"]["spec"]["containers"]
    return c


BASE = kustomize(K8S / "base")
WITH_POSTGRES = kustomize(K8S / "postgres")
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_is_valid_against_the_kubernetes_schema(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_the_schema_check_refuses_a_misspelt_field() -> None:
    job = yaml.safe_load((K8S / "base" / "migrate-job.yaml").read_text())
    job["spec"]["template"]["spec"]["containers"][0]["comand"] = ["isotune"]
    with pytest.raises(kubernetes_validate.ValidationError, match="comand"):
        kubernetes_validate.validate(job, VERSION, strict=True)


def test_the_trees_hold_what_the_readme_says() -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in BASE)
    assert kinds == [
        ("Deployment", "isotune-dashboard"),
        ("Deployment", "isotune-server"),
        ("Job", "isotune-migrate"),
        ("Job", "isotune-worker"),
        ("Service", "isotune-dashboard"),
        ("Service", "isotune-server"),
    ]
    extra = {(d["kind"], d["metadata"]["name"]) for d in WITH_POSTGRES} - set(kinds)
    assert extra == {("StatefulSet", "isotune-postgres"), ("Service", "isotune-postgres")}


def test_the_server_is_ready_on_a_route_it_has_and_its_service_selects_it() -> None:
    server = by_kind(BASE, "Deployment", "isotune-server")
    c = container(server)
    paths = {r.path for r in ops_routes.routes}  # type: ignore[attr-defined]
    assert c["readinessProbe"]["httpGet"]["path"] == "/api/v1/ready" in paths
    assert c["livenessProbe"]["httpGet"]["path"] in paths
    service = by_kind(BASE, "Service", "isotune-server")
    labels = server["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert server["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_worker_job_is_a_work_queue_with_one_gpu_a_pod() -> None:
    job = by_kind(BASE, "Job", "isotune-worker")
    spec = job["spec"]
    # work-queue pattern: N pods, completions unset; each pod exits 0 when the study is done
    assert spec["parallelism"] >= 1 and "completions" not in spec
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure"
    c = container(job)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e for e in c["env"]}
    server = by_kind(BASE, "Service", "isotune-server")
    port = server["spec"]["ports"][0]["port"]
    assert env["ISOTUNE_SERVER"]["value"] == f"http://isotune-server:{port}"
    assert env["ISOTUNE_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "isotune",
        "key": "worker-token",
    }
    # the pod's name as worker id: a container restarted in its pod gets its trial back
    assert env["ISOTUNE_WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # time to give the trial back on SIGTERM before the kubelet kills the pod
    assert pod["terminationGracePeriodSeconds"] >= 30


def test_the_database_url_comes_from_the_secret_everywhere() -> None:
    for doc in BASE:
        if doc["kind"] in ("Deployment", "Job") and doc["metadata"]["name"] != "isotune-worker":
            env = {e["name"]: e for e in container(doc)["env"]}
            ref = env["ISOTUNE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "isotune", "key": "database-url"}, doc["metadata"]["name"]


def _isotune_commands() -> list[tuple[str, list[str]]]:
    out = []
    for doc in WITH_POSTGRES:
        if doc["kind"] in ("Deployment", "Job", "StatefulSet"):
            cmd = container(doc).get("command") or []
            if cmd[:1] == ["isotune"]:
                out.append((doc["metadata"]["name"], cmd[1:]))
    return out


@pytest.mark.parametrize("name,args", _isotune_commands(), ids=lambda x: str(x))
def test_every_isotune_command_parses(
    name: str, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = next(d for d in BASE if d["metadata"]["name"] == name)
    for e in container(doc).get("env", []):  # what the pod's environment gives the command
        monkeypatch.setenv(e["name"], e.get("value", "placeholder"))
    ctx = parse_command(args)
    assert ctx.command.name == COMMANDS[name]


COMMANDS = {
    "isotune-migrate": "upgrade",
    "isotune-server": "serve",
    "isotune-dashboard": "dashboard",
    "isotune-worker": "worker",
}


def test_every_workload_has_an_isotune_command() -> None:
    assert {n for n, _ in _isotune_commands()} == set(COMMANDS)
