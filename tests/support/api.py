"""The REST API driven in-process (``fastapi.testclient``) and read from its metrics."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support import specs

__all__ = ["V1", "claim", "create", "metric"]

V1 = "/api/v1"


def create(client: TestClient, **changes: object) -> dict:
    """Create :data:`~tests.support.specs.API` with ``changes``; assert 201."""
    r = client.post(V1 + "/studies", json=specs.api(**changes))
    assert r.status_code == 201, r.text
    return r.json()


def claim(client: TestClient, worker: str, study: str = "s1") -> dict:
    """``worker`` claims a trial of ``study``; assert 200; the answer."""
    r = client.post(f"{V1}/studies/{study}/claim", json={"worker_id": worker})
    assert r.status_code == 200, r.text
    return r.json()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` with ``labels`` in Prometheus text (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0
