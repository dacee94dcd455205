"""The per-process study cache: a process that never claimed builds no prior.

A heartbeat, report or completion handled by a server process that has not seen the study yet
caches it (its spec, distributions and pruner) but does not build its mean-field prior: that
takes a scan of the space, and only a claim or a prior map needs it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from service.api import create_app
from tests.support.api import V1, claim, create


def test_a_second_process_answers_a_worker_without_building_the_prior(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    with TestClient(create_app(url, auth=False)) as first:
        create(first, prior={"mode": "restrict"})
        trial = claim(first, "w1")["trial"]
        assert first.app.state.service.cache.get("s1", 1).prior_built  # the claim needed it
    with TestClient(create_app(url, auth=False)) as second:  # another process, same database
        cache = second.app.state.service.cache
        tid, body = trial["trial_id"], {"worker_id": "w1"}
        assert second.post(f"{V1}/trials/{tid}/heartbeat", json=body).status_code == 200
        report = {**body, "values": [{"step": 1, "value": 0.5}]}
        assert second.post(f"{V1}/trials/{tid}/report", json=report).status_code == 200
        done = second.post(f"{V1}/trials/{tid}/complete", json={**body, "value": 0.5})
        assert done.status_code == 200 and done.json()["state"] == "COMPLETE"
        cached = cache.get("s1", 1)
        assert not cached.prior_built
        assert cached.prior is not None and cached.prior_built  # built on first use
