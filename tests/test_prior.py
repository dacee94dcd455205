"""The mean-field prior in the search (``service.prior``): restriction, πBO weights, refusals."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from fastapi.testclient import TestClient

from meanfield import Config, Inputs, fixed_point, memory_check
from meanfield.constants import MEASURED_C
from service.prior import Prior
from service.prior_sampler import PriorSampler
from service.schemas import StudyCreate
from service.search import study_prior, to_distribution
from tests.support import specs

SPACE = specs.PRIOR_SPACE


def spec(**changes: object) -> StudyCreate:
    return StudyCreate.model_validate(specs.prior(**changes))


def draw(s: StudyCreate, base: optuna.samplers.BaseSampler, n: int) -> tuple[list, PriorSampler]:
    """``n`` trials asked from an in-memory study through the prior (objective: ``lr``)."""
    prior = study_prior(s)
    assert prior is not None
    space = {k: to_distribution(d) for k, d in s.space.items()}
    study = optuna.create_study(sampler=base, direction="maximize")
    sampler = PriorSampler(base, prior, space, n_trials=0, seed=0)
    study.sampler = sampler
    points = []
    for i in range(n):
        sampler.n_trials = i
        trial = study.ask(space)
        points.append(trial.params)
        study.tell(trial, -abs(math.log10(trial.params["lr"]) + 2.5))
    return points, sampler


def feasible(s: StudyCreate, points: list[dict]) -> np.ndarray:
    """Checked independently of the sampler: the engine's own memory_check on every point."""
    names = ("mu_f", "nu", "sigma")
    cfg = Config.from_flat(
        "lstm", {n: np.array([p[n] for p in points]) for n in names}, weights="orthogonal"
    )
    inputs = Inputs(R=1.0, regime="independent")  # padding "noise": N(0, 1)
    return memory_check(cfg, s.task.T, MEASURED_C["lstm"], inputs).ok


@pytest.mark.slow
def test_restrict_never_hands_out_an_infeasible_point_in_1000_draws() -> None:
    s = spec()
    points, sampler = draw(s, optuna.samplers.RandomSampler(seed=1), 1000)
    ok = feasible(s, points)
    assert ok.all(), f"{(~ok).sum()} infeasible points"
    # the random base proposes infeasible points often: the repair did real work
    assert sampler.repairs > 10 and sampler.redraws > 300
    # and only raised the bias: the other parameters are spread over their whole ranges
    nus = np.array([p["nu"] for p in points])
    assert nus.min() < 0.5 and nus.max() > 2.7


def test_restrict_under_tpe_stays_feasible_and_tpe_still_learns() -> None:
    s = spec()
    points, _ = draw(s, optuna.samplers.TPESampler(seed=2, n_startup_trials=10), 120)
    assert feasible(s, points).all()
    lr_error = [abs(math.log10(p["lr"]) + 2.5) for p in points]
    assert np.median(lr_error[-40:]) < 0.6 * np.median(lr_error[:20])  # converging on lr


@pytest.mark.slow
def test_restrict_with_gradient_bounds() -> None:
    s = spec(prior={"mode": "restrict", "gradient_bounds": [-8.0, 0.0]})
    prior = study_prior(s)
    points, _ = draw(s, optuna.samplers.RandomSampler(seed=3), 150)
    got = prior.evaluate(points)
    assert got["ok"].all()
    assert (got["log_m1"] <= 0.0).all() and (got["log_m1"] >= -8.0).all()


#: The practitioner's LSTM space (per-gate bias means, weight scales, bias spread) at T = 300.
FULL = {
    **{k: {"type": "float", "low": -3.0, "high": 3.0} for k in ("mu_i", "mu_o")},
    "mu_f": {"type": "float", "low": -3.0, "high": 6.0},
    "mu_g": {"type": "float", "low": -1.0, "high": 1.0},
    **{k: {"type": "float", "low": 0.25, "high": 2.0} for k in ("nu", "sigma")},
    "rho": {"type": "float", "low": 0.0, "high": 1.0},
    "lr": SPACE["lr"],
}
FULL_TASK = {"name": "padded_digits", "T": 300, "options": {"padding": "noise"}}


@pytest.mark.slow
def test_restrict_with_a_cell_moment_bound_keeps_tanh_out_of_saturation() -> None:
    """Without the bound, TPE's restricted proposals mostly have E[c²] far above 30 (the repair
    raises mu_f, which lengthens the cell's accumulation); with it none does, and every point
    still meets the time-scale criterion, both checked on the engine's full fixed point."""
    names = [n for n in FULL if n != "lr"]
    seen = {}
    for bound in (None, 30.0):
        prior = {"mode": "restrict", "calibrate": False, "max_cell_moment": bound}
        s = spec(space=FULL, task=FULL_TASK, prior=prior)
        points, _ = draw(s, optuna.samplers.TPESampler(seed=1), 30)
        cfg = Config.from_flat("lstm", {n: np.array([p[n] for p in points]) for n in names})
        fp = fixed_point(cfg, Inputs(R=1.0))
        assert (fp.xi_c >= 300 / MEASURED_C["lstm"] * (1 - 1e-6)).all()
        seen[bound] = fp.s_star
    assert (seen[None] > 30.0).mean() > 0.5
    assert (seen[30.0] <= 30.0 * (1 + 1e-6)).all()


def test_a_cell_moment_bound_is_refused_where_it_means_nothing(client: TestClient) -> None:
    """The bound is the LSTM's in restrict mode; elsewhere, or unreachable, a 422 naming it."""
    bound = {"max_cell_moment": 30.0}
    cases = [
        spec(name="gru", cell="gru", space={"mu_z": SPACE["mu_f"], "lr": SPACE["lr"]}, prior=bound),
        spec(name="soft", prior={"mode": "soft", **bound}),
        spec(name="tight", space=FULL, task=FULL_TASK, prior={"max_cell_moment": 1e-6}),
    ]
    for body in cases:
        r = client.post("/api/v1/studies", json=body.model_dump(mode="json"))
        got = r.json()
        assert r.status_code == 422 and got["field"] == "prior.max_cell_moment", r.text
        assert got["detail"].startswith(
            ("prior.max_cell_moment=30.0: ", "prior.max_cell_moment=1e-06: ")
        )
    r = client.post("/api/v1/studies", json={**specs.prior(), "prior": {"max_cell_moment": -1}})
    assert r.status_code == 422 and "max_cell_moment" in r.text
    assert client.get("/api/v1/studies").json() == []  # nothing stored


def test_soft_weights_decay_as_trials_accumulate() -> None:
    """The fixed-c prior (``calibrate: false``) fades as πBO's does."""
    fixed = {"mode": "soft", "confidence": 10.0, "width": 0.5, "calibrate": False}
    prior = study_prior(spec(prior=fixed))
    margins = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    density = prior.density(margins)
    assert density[2] == pytest.approx(0.5) and (np.diff(density) > 0).all()
    for n in (0, 1, 9, 99, 999):
        w = prior.soft_weights(margins, n)
        expected = density ** (10.0 / (n + 1))
        np.testing.assert_allclose(w, expected / expected.max(), rtol=1e-9)
    early, late = prior.soft_weights(margins, 0), prior.soft_weights(margins, 999)
    assert early[-1] / early[0] > 1e6  # at first the prior decides
    assert late[-1] / late[0] < 1.1  # after 1000 trials it hardly matters


def test_calibrated_soft_weights_keep_their_exponent_and_favour_sure_memory() -> None:
    """A calibrated study's π(x) is its model's lower credible bound, which does not fade; before
    any outcome, started from a c ten times too large (136), it still favours a memory time
    ξ_C = T over ξ_C = T/30 (which only the wrong c accepts) by orders of magnitude."""
    c = 10 * 13.6
    prior = study_prior(spec(prior={"mode": "soft", "c": c, "confidence": 10.0}))
    assert prior.model is not None and not prior.model.outcomes
    u = np.array([0.0, math.log(30.0)])  # log(T/ξ_C)
    margins = math.log(c) - u
    early, late = prior.soft_weights(margins, 0), prior.soft_weights(margins, 999)
    np.testing.assert_allclose(early, late)
    assert early[1] / early[0] < 1e-3
    # the fixed rule with the same c hardly tells them apart
    rule = prior.density(margins) ** 10.0
    assert rule[1] / rule[0] > 0.5


def test_soft_weights_never_all_vanish() -> None:
    """A huge confidence, or candidates the theory gives no memory at all, still leave a choice."""
    prior = study_prior(spec(prior={"mode": "soft", "confidence": 1e6}))
    for margins in ([-0.5] * 8, [-np.inf] * 8, [np.nan, -3.0, -2.0]):
        w = prior.soft_weights(np.array(margins), 0)
        assert np.isfinite(w).all() and w.max() == 1.0


def test_soft_prefers_feasible_points_early() -> None:
    s = spec(prior={"mode": "soft", "confidence": 10.0})
    soft, _ = draw(s, optuna.samplers.RandomSampler(seed=4), 60)
    plain = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=4))
    space = {k: to_distribution(d) for k, d in s.space.items()}
    control = [plain.ask(space).params for _ in range(60)]
    assert feasible(s, soft[:20]).mean() > feasible(s, control[:20]).mean() + 0.2


def test_empty_restricted_region_is_refused_naming_the_range(client: TestClient) -> None:
    body = spec(space={**SPACE, "mu_f": {"type": "float", "low": -2.0, "high": 1.0}})
    r = client.post("/api/v1/studies", json=body.model_dump(mode="json"))
    assert r.status_code == 422
    got = r.json()
    assert got["field"] == "space.mu_f"
    assert "largest xi_C reachable" in got["detail"] and "widen space.mu_f" in got["detail"]
    assert client.get("/api/v1/studies").json() == []  # nothing stored


def test_restrict_needs_the_memory_gate_bias(client: TestClient) -> None:
    space = {k: v for k, v in SPACE.items() if k != "mu_f"}
    r = client.post("/api/v1/studies", json=spec(space=space).model_dump(mode="json"))
    assert r.status_code == 422 and r.json()["field"] == "prior.mode" and "mu_f" in r.text


def test_a_range_the_theory_refuses_is_422_in_every_mode(client: TestClient) -> None:
    for mode in ("soft", "restrict"):
        bad = spec(
            name=mode,
            prior={"mode": mode},
            space={**SPACE, "rho": {"type": "float", "low": -1.0, "high": 1.0}},
        )
        r = client.post("/api/v1/studies", json=bad.model_dump(mode="json"))
        assert r.status_code == 422 and r.json()["field"] == "space.rho", r.text


def test_bad_task_is_refused_naming_the_field(client: TestClient) -> None:
    bad = spec(task={"name": "padded_digits", "T": 10, "options": {"padding": "glitter"}})
    r = client.post("/api/v1/studies", json=bad.model_dump(mode="json"))
    assert r.status_code == 422 and r.json()["field"] == "task.padding"


def test_claimed_trials_carry_the_theory_numbers(client: TestClient) -> None:
    for mode in ("restrict", "off"):
        body = spec(name=mode, prior={"mode": mode}, budget=3, seed=5)
        assert client.post("/api/v1/studies", json=body.model_dump(mode="json")).status_code == 201
        got = client.post(f"/api/v1/studies/{mode}/claim", json={"worker_id": "w"}).json()
        theory = got["trial"]["theory"]
        assert theory["mode"] == mode and theory["T"] == 100
        assert {"xi_c", "m1", "m2", "predicted_trainable", "init"} <= set(theory)
        if mode == "restrict":
            assert theory["predicted_trainable"] and theory["xi_c"] >= 100 / MEASURED_C["lstm"]
        stored = client.get(f"/api/v1/trials/{got['trial']['trial_id']}").json()
        assert stored["user_attrs"]["isotune_theory"] == theory
        # the key numbers also on their own, as optuna-dashboard's table sorts and filters them
        for key in ("xi_c", "margin", "predicted_trainable", "T_log_m1", "cell_moment"):
            assert stored["user_attrs"][key] == theory[key], key
        assert theory["cell_moment"] > 0  # the LSTM's E[c²], with or without a bound
        assert stored["user_attrs"]["isotune_worker"] == "w"


@pytest.mark.slow
def test_repair_and_resample_land_inside_the_region_from_any_start() -> None:
    """From 200 infeasible starts: ``repair`` lands just inside the boundary, every time (the
    solver's last digits on the boundary must not make it give up), ``timescale`` spreads the
    memory time over the feasible band. The prior is made to believe the theory is slow, as on
    a loaded machine, so it scans the fewest points: the precision must not depend on it."""
    prior = study_prior(spec())
    prior.cost = 1.0  # seconds a configuration: the scan falls to its minimum
    rng = np.random.default_rng(0)
    repaired, resampled = [], []
    for b in np.linspace(-2.0, 2.5, 200):
        start = {"mu_f": float(b), "nu": 1.0, "sigma": 1.0, "lr": 1e-3}
        repaired.append(prior.repair(start))
        resampled.append(prior.resample(start, rng))
    assert all(p is not None for p in repaired + resampled)
    margins = prior.evaluate(repaired)["margin"]
    assert (margins >= 0).all() and margins.max() < 1e-3
    spread = prior.evaluate(resampled)["margin"]
    assert (spread >= 0).all() and np.median(spread) > 0.5


def test_prior_map_png_shows_the_trials(client: TestClient) -> None:
    """The PNG is a valid image, and at every trial's position its pixel has the colour of the
    trial's outcome (COMPLETE and trained: green; PRUNED: red; running: blue)."""
    import io

    import matplotlib.image as mpimg

    from service.plots import COLORS

    body = spec(name="pic", prior={"mode": "off"}, budget=6, seed=3)
    assert client.post("/api/v1/studies", json=body.model_dump(mode="json")).status_code == 201
    outcomes = {}
    for i, how in enumerate(["trained", "PRUNED", "RUNNING", "trained"]):
        t = claim_trial(client, "pic", f"w{i}")
        if how == "trained":
            done = {"worker_id": f"w{i}", "value": 0.9}
        elif how == "PRUNED":
            done = {"worker_id": f"w{i}", "pruned": True}
        else:
            done = None
        if done is not None:
            r = client.post(f"/api/v1/trials/{t['trial_id']}/complete", json=done)
            assert r.status_code == 200
        outcomes[t["number"]] = how
    r = client.get("/api/v1/studies/pic/prior.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(io.BytesIO(r.content), format="png")[:, :, :3]
    drawn = client.app.state.service.studies.prior_map("pic")
    assert drawn.png == r.content and (drawn.x, drawn.y) == ("mu_f", "nu")
    checked = 0
    for number, x, y in drawn.positions:
        others = [(a, b) for n, a, b in drawn.positions if n != number]
        if any(abs(a - x) < 12 and abs(b - y) < 12 for a, b in others):
            continue  # overlapping markers: the later one hides the earlier
        pixel = image[round(y), round(x)]
        assert np.allclose(pixel, COLORS[outcomes[number]], atol=0.06), (number, pixel)
        checked += 1
    assert checked >= 2
    assert client.get("/api/v1/studies/nope/prior.png").status_code == 404


def claim_trial(client: TestClient, study: str, worker: str) -> dict:
    r = client.post(f"/api/v1/studies/{study}/claim", json={"worker_id": worker})
    assert r.status_code == 200 and r.json()["status"] == "assigned", r.text
    return r.json()["trial"]


def _map_trial(number: int, state: str, params: dict, value: float | None = None) -> dict:
    return {"number": number, "state": state, "value": value, "params": params, "user_attrs": {}}


def test_prior_map_line_is_the_exact_boundary_and_says_what_trained_means() -> None:
    """The line ξ_C = T/c is solved for on each row: a hair to its right is feasible and a hair
    to its left is not (a trial with margin +0.02 is drawn inside). A retry's outcome covers its
    failed attempt at the same point; the legend says what "trained" means; the ridge of
    diverging ξ_C is labelled where the picture has one."""
    import io

    import matplotlib.image as mpimg

    from service.plots import COLORS, _boundary, prior_map

    prior = study_prior(
        spec(space={"mu_f": specs.PRIOR_SPACE["mu_f"], "nu": specs.PRIOR_SPACE["nu"]})
    )
    ys = np.linspace(0.3, 3.0, 7)
    xs = np.linspace(-2.0, 8.0, 9)  # a coarse grid: the line must not inherit its coarseness
    gx, gy = np.meshgrid(xs, ys)
    grid = [{"mu_f": float(a), "nu": float(b)} for a, b in zip(gx.ravel(), gy.ravel(), strict=True)]
    log_xi = np.log10(prior.evaluate(grid)["xi_c"]).reshape(gx.shape)
    edge = _boundary(prior, {}, "mu_f", "nu", xs, ys, log_xi)
    assert np.isfinite(edge).all()
    for x, y in zip(edge, ys, strict=True):
        margins = prior.evaluate([{"mu_f": x + d, "nu": y} for d in (-1e-4, 1e-4)])["margin"]
        assert margins[0] < 0 <= margins[1], (x, y, margins)

    same = {"mu_f": 5.0, "nu": 1.0}
    trials = [_map_trial(0, "FAIL", same), _map_trial(1, "COMPLETE", same, 0.9)]
    drawn = prior_map(prior, trials, "t", trained=0.55, trained_means="value ≥ 0.55")
    image = mpimg.imread(io.BytesIO(drawn.png), format="png")[:, :, :3]
    _, x, y = drawn.positions[1]
    assert np.allclose(image[round(y), round(x)], COLORS["trained"], atol=0.06)
    assert "trained (value ≥ 0.55)" in drawn.legend and "failed" in drawn.legend
    assert drawn.ridge is None  # independent inputs: ξ_C stays finite and smooth here

    shared = study_prior(
        spec(
            task={"name": "copy", "T": 300},
            space={
                "mu_f": {"type": "float", "low": -2.0, "high": 12.0},
                "nu": specs.PRIOR_SPACE["nu"],
            },
        )
    )
    ridge = prior_map(shared, [], "t").ridge
    assert ridge is not None and 3.0 < ridge[0] < 10.0, ridge  # the diagonal of the shared regime


def test_prior_map_redraws_without_recomputing_its_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """A map is redrawn on every request (its trials change), but ξ_C over its grid is computed
    once per criterion: a second request evaluates nothing, and a new c (a calibration) gets a
    new grid and its own line. (The fuzzer's requests for the map once cost the server 80 s.)"""
    import dataclasses

    from service.plots import prior_map

    prior = study_prior(spec(task={"name": "copy", "T": 41}))  # a T no other test maps
    calls = []
    evaluate = Prior.evaluate
    monkeypatch.setattr(Prior, "evaluate", lambda self, pts: calls.append(1) or evaluate(self, pts))
    first = prior_map(prior, [], "t")
    assert calls
    calls.clear()
    trial = _map_trial(0, "COMPLETE", {"mu_f": 3.0, "nu": 1.0}, 0.9)
    again = prior_map(prior, [trial], "t")
    assert not calls and again.png != first.png and len(again.positions) == 1
    moved = prior_map(dataclasses.replace(prior, c=prior.c / 4), [], "t")
    assert calls and moved.png != first.png


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_studies_with_nearby_seeds_do_not_share_proposals(sampler: str) -> None:
    """Proposal n of the study seeded s is not proposal n − 1 of the study seeded s + 1 (with
    the seed s + n they were the same point: "five seeds" of a benchmark shared their trials,
    shifted by one); the same seed and index still give the same point."""
    from service.search import make_sampler, proposal_seed

    def proposal(seed: int, index: int) -> float:
        study_spec = spec(seed=seed, sampler=sampler, prior={"mode": "off"})
        study = optuna.create_study(sampler=make_sampler(study_spec, index))
        return study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)}).params["x"]

    assert all(proposal(s, n) != proposal(s + 1, n - 1) for s in range(3) for n in range(1, 4))
    assert proposal(2, 3) == proposal(2, 3)
    assert proposal_seed(None, 3) is None and proposal_seed(-1, 0) == proposal_seed(-1, 0)
