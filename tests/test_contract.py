"""The contract both sides share: the server refuses at creation what no worker could train,
with the rules the worker trains by (``contract.training``)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from contract.training import TrainError, check_option, resolve_settings
from contract.wire import TrialAssignment
from meanfield.params import is_init
from tests.support import specs
from tests.support.api import V1, claim, create
from workers.agent import train_config


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"training": {"step": 100}}, "training.step"),
        ({"training": {"hiden": 64}}, "training.hiden"),
        ({"training": {"steps": "many"}}, "training.steps"),
        ({"training": {"clip": 0}}, "training.clip"),
        ({"training": {"optimizer": "adamw"}}, "training.optimizer"),
        ({"training": {"mu_": 1.0}}, "training.mu_"),
        ({"space": {"learning_rate": {"type": "float", "low": 0.001, "high": 0.1}}},
         "space.learning_rate"),
        ({"space": {"mu_forget": {"type": "float", "low": 0.0, "high": 5.0}}}, "space.mu_forget"),
        ({"space": {"mu_z": {"type": "float", "low": 0.0, "high": 5.0}}}, "space.mu_z"),  # a GRU's
        ({"space": {"clip": {"type": "float", "low": 0.0, "high": 1.0}}}, "space.clip"),
        ({"space": {"hidden": {"type": "float", "low": 16.5, "high": 64.0}}}, "space.hidden"),
        ({"space": {"optimizer": {"type": "categorical", "choices": ["adam", "lion"]}}},
         "space.optimizer"),
        ({"space": {"task_options": {"type": "categorical", "choices": [1, 2]}}},
         "space.task_options"),
    ],
)  # fmt: skip
def test_specs_no_worker_can_train_are_refused_naming_the_field(
    client: TestClient, changes: dict, field: str
) -> None:
    """With the prior off too: the theory is not consulted, the contract is."""
    spec = specs.api(prior={"mode": "off"}, **changes)
    if "space" in changes:
        spec["space"] = {"mu_f": specs.API["space"]["mu_f"], **changes["space"]}
    r = client.post(V1 + "/studies", json=spec)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field, r.text
    assert client.get(V1 + "/studies").json() == []  # nothing stored


def test_what_the_server_accepts_the_worker_trains(client: TestClient) -> None:
    """A study's training options and searched options become the worker's training run."""
    training = {"hidden": 16, "steps": 10, "clip": None, "init": {"mu_i": 1.0}, "eval_every": 5}
    create(client, training=training)
    trial = claim(client, "w1")["trial"]
    config = train_config(trial, device="cpu")
    assert config.hidden == trial["params"]["hidden"] and config.steps == 10
    assert config.lr == trial["params"]["lr"] and config.optimizer == trial["params"]["optimizer"]
    assert config.init == {"mu_i": 1.0, "mu_f": trial["params"]["mu_f"]}
    assert config.seed == trial["number"] and config.clip is None
    assert TrialAssignment.model_validate(trial).study == "s1"


def test_resolve_settings_names_a_foreign_option() -> None:
    with pytest.raises(TrainError) as e:
        resolve_settings({}, {"learning_rate": 0.1}, 0, is_init)
    assert e.value.field == "learning_rate" and "not a training setting" in e.value.reason
    got = resolve_settings({"hidden": 32.0}, {"mu_f": 2, "lr": 0.01}, 7, is_init)
    assert got == {"seed": 7, "hidden": 32, "lr": 0.01, "init": {"mu_f": 2.0}}


@pytest.mark.parametrize(
    ("name", "value"),
    [("hidden", 0), ("hidden", True), ("lr", float("nan")), ("lr", -1), ("clip", 0),
     ("weights", "xavier"), ("init", "random"), ("init", 3), ("seed", 1.5),
     ("task_options", "x"), ("nonsense", 1)],
)  # fmt: skip
def test_check_option_refuses_naming_the_option(name: str, value: object) -> None:
    with pytest.raises(TrainError) as e:
        check_option(name, value)
    assert e.value.field == name and name in str(e.value)
