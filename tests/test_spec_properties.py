"""Study specifications drawn at random (hypothesis): the service answers 201 or a 4xx that names
the field, never a server error; an accepted study hands out a first trial inside its space."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from service.api import create_app

pytestmark = pytest.mark.slow  # 120 random specifications through the API

V1 = "/api/v1"
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.function_scoped_fixture),
)
NAMES = itertools.count()


@st.composite
def good_distribution(draw: st.DrawFn, name: str) -> dict:
    if name in ("hidden", "layers"):
        lo = draw(st.integers(1, 64))
        return {"type": "int", "low": lo, "high": lo + draw(st.integers(0, 64))}
    if name == "optimizer":
        return {
            "type": "categorical",
            "choices": draw(st.lists(st.text(max_size=5), min_size=1, max_size=3, unique=True)),
        }
    lo = draw(st.floats(-3, 6) if name.startswith("mu") else st.floats(1e-4, 2))
    d = {"type": "float", "low": lo, "high": lo + draw(st.floats(1e-3, 5))}
    if name == "lr" and draw(st.booleans()):
        d["log"] = True
    return d


@st.composite
def good_spec(draw: st.DrawFn) -> dict:
    cell = draw(st.sampled_from(["lstm", "gru", "minimalrnn"]))
    gate = {"lstm": "f", "gru": "z", "minimalrnn": "u"}[cell]
    names = draw(
        st.lists(
            st.sampled_from([f"mu_{gate}", "nu", "sigma", "rho", "lr", "hidden", "optimizer"]),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    spec = {
        "name": f"p{next(NAMES)}",
        "cell": cell,
        "task": {"name": draw(st.sampled_from(["copy", "padded_digits"])),
                 "T": draw(st.integers(1, 300))},
        "space": {n: draw(good_distribution(n)) for n in names},
        "sampler": draw(st.sampled_from(["tpe", "random", "qmc"])),
        "pruner": draw(st.sampled_from(["median", "none", "hyperband"])),
        "budget": draw(st.integers(1, 50)),
        "seed": draw(st.integers(0, 2**31)),
        "prior": {"mode": draw(st.sampled_from(["restrict", "soft", "off"])),
                  "strategy": draw(st.sampled_from(["timescale", "repair"]))},
    }  # fmt: skip
    return spec


#: Values that are wrong for some field: wrong types, non-finite or huge numbers, odd text.
junk = st.one_of(
    st.none(), st.booleans(), st.text(max_size=8), st.just([]), st.just({}),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
)  # fmt: skip


@st.composite
def specs(draw: st.DrawFn) -> tuple[dict, list[tuple[str, ...]]]:
    """A valid specification, then, half the time, one to three fields replaced by junk (at the
    top level, in the task, the prior, or inside one distribution); with the paths replaced."""
    spec = draw(good_spec())
    corrupted: list[tuple[str, ...]] = []
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        where = draw(st.sampled_from(["top", "task", "prior", "space"]))
        if where == "top":
            key = draw(st.sampled_from(["cell", "budget", "retries", "lease_seconds", "seed",
                                        "direction", "sampler", "pruner", "pruner_options",
                                        "training", "extra"]))  # fmt: skip
            spec[key] = draw(junk)
            corrupted.append((key,))
        elif where in ("task", "prior"):
            keys = (
                ["name", "T", "options"]
                if where == "task"
                else ["mode", "c", "confidence", "width", "strategy"]
            )
            key = draw(st.sampled_from(keys))
            spec[where][key] = draw(junk)
            corrupted.append((where, key))
        else:
            name = draw(st.sampled_from(sorted(spec["space"])))
            key = draw(st.sampled_from(["type", "low", "high", "log", "step", "choices", "x"]))
            spec["space"][name][key] = draw(junk)
            corrupted.append(("space", name, key))
    return spec, corrupted


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('spec')) / 'spec.db'}"
    with TestClient(create_app(url, auth=False)) as c:
        yield c


def named_fields(body: dict) -> list[tuple[str, ...]]:
    """The fields a 422 names: each validation error's location (without ``body``), or the
    service's dotted ``field``."""
    detail = body.get("detail")
    if isinstance(detail, list):  # FastAPI's validation errors
        return [tuple(str(x) for x in e["loc"] if x != "body") for e in detail]
    return [tuple(str(body.get("field") or "").split("."))]


def names_a_field(body: dict, corrupted: list[tuple[str, ...]]) -> bool:
    """Every error names a field, and one of them is where junk went in: the same top-level
    field, the same part of the task or the prior, the same parameter of the space. A spec with
    no junk may be refused for what its values mean (an empty restricted region…): any field."""
    fields = named_fields(body)
    if not fields or not all(f and f[0] for f in fields):
        return False
    if not corrupted:
        return True
    return any(f[: min(len(p), 2)] == p[:2] for f in fields for p in corrupted)


def _json_safe(x: object) -> object:
    """Non-finite floats as JSON cannot carry them: the client sends them as strings."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


@SETTINGS
@given(drawn=specs())
def test_any_spec_is_accepted_or_refused_naming_the_field(
    api: TestClient, drawn: tuple[dict, list[tuple[str, ...]]]
) -> None:
    spec, corrupted = drawn
    r = api.post(V1 + "/studies", json=_json_safe(spec))
    assert r.status_code in (201, 422), (r.status_code, r.text, spec)
    if r.status_code == 422:
        assert names_a_field(r.json(), corrupted), (r.text, corrupted)
        return
    got = api.post(f"{V1}/studies/{spec['name']}/claim", json={"worker_id": "w"})
    assert got.status_code == 200, (got.text, spec)
    trial = got.json()["trial"]
    space = r.json()["spec"]["space"]
    for k, d in space.items():
        v = trial["params"][k]
        if d["type"] == "categorical":
            assert v in d["choices"]
        else:
            assert d["low"] - 1e-9 * abs(d["low"]) <= v <= d["high"] + 1e-9 * abs(d["high"])
    assert api.delete(f"{V1}/studies/{spec['name']}").status_code == 204


def test_names_a_field_wants_the_corrupted_one() -> None:
    """The check above is not vacuous: an error about another field than the one junk went into
    does not pass it."""
    budget = {"detail": [{"loc": ["body", "budget"], "msg": "bad"}]}
    assert not names_a_field(budget, [("space", "mu_f", "low")])
    assert names_a_field(budget, [("budget",)])
    assert names_a_field({"detail": "x", "field": "space.mu_f"}, [("space", "mu_f", "low")])
    assert not names_a_field({"detail": "x", "field": "space.nu"}, [("space", "mu_f", "low")])
    assert not names_a_field({"detail": "x"}, [])  # no field named at all
