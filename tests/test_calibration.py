"""The trainability model (``service/calibration.py``): before any outcome it is the study's
rule; as outcomes drawn from a known edge (or a known band) arrive, its posterior moves there."""

from __future__ import annotations

import math

import numpy as np

from service.calibration import TrainabilityModel, outcome


def draw(rng: np.random.Generator, n: int, trained) -> list[tuple[float, float, bool]]:
    u = rng.uniform(-5.0, 5.0, n)
    return [(float(x), 0.0, bool(rng.random() < trained(x))) for x in u]


def test_before_any_outcome_the_model_is_the_rule() -> None:
    """The prior's mean logit is the soft prior's logistic in log(c·ξ_C/T); averaged over the
    prior's spread the probability is flatter, but on the same side of 1/2 as the rule."""
    model = TrainabilityModel(c=13.6, width=0.5)
    edge = math.log(13.6)
    u = np.array([edge - 1.0, edge, edge + 1.0])
    mean, _ = model.posterior.logit(u, np.zeros(3))
    assert np.allclose(mean, (edge - u) / 0.5)
    p = model.probability(u)
    assert p[0] > 0.6 and abs(p[1] - 0.5) < 1e-9 and p[2] < 0.45
    c, lo, hi = model.edge()
    # the median of 4,000 posterior draws: its standard error in log c is about 0.04
    assert abs(math.log(c) - edge) < 0.12 and lo < 13.6 / 2 and hi > 13.6 * 2  # wide: a prior
    assert (model.lower_bound([edge - 1.0]) < p[0]).all()


def test_the_posterior_moves_to_a_known_edge() -> None:
    """Outcomes from c = 5 (width 0.3 in log units), a prior centred on c = 13.6: the edge moves
    to 5, its interval narrows and holds 5; points between the two edges go from trainable to
    not."""
    rng = np.random.default_rng(0)
    true_c = 5.0
    data = draw(rng, 640, lambda u: 1 / (1 + math.exp((u - math.log(true_c)) / 0.3)))
    model = TrainabilityModel(c=13.6, width=0.5)
    between = math.log(9.0)  # trainable by the prior's rule, not by the truth
    before = float(model.probability([between])[0])
    widths, errors = [], []
    for n in (10, 40, 160, 640):
        model = TrainabilityModel(c=13.6, width=0.5)
        for u, g, y in data[:n]:
            model.add(u, g, y)
        c, lo, hi = model.edge(level=0.95)
        widths.append(math.log(hi / lo))
        errors.append(abs(math.log(c / true_c)))
    after = float(model.probability([between])[0])
    assert before > 0.5 > 0.3 > after, (before, after)  # the truth there: 0.12
    assert errors[-1] < 0.15 and errors[-1] < errors[0], errors
    assert widths[0] > widths[1] > widths[2] > widths[3], widths
    assert lo < true_c < hi


def test_a_band_is_learnt_when_too_long_a_memory_fails() -> None:
    """Trainable only for -2.5 ≤ log(T/ξ_C) ≤ log 5: the quadratic term turns negative and a
    memory far longer than the bridge is no longer called trainable."""
    rng = np.random.default_rng(1)

    def band(u: float) -> float:
        return 1 / (1 + math.exp((u - math.log(5)) / 0.3)) / (1 + math.exp((-2.5 - u) / 0.3))

    model = TrainabilityModel(c=13.6, width=0.5)
    for u, g, y in draw(rng, 300, band):
        model.add(u, g, y)
    assert model.posterior.mean[2] < 0  # q: a band
    far, mid, short = model.probability([-4.5, 0.0, 3.0])
    assert far < 0.3 and mid > 0.7 and short < 0.2
    assert abs(math.log(model.edge()[0] / 5.0)) < 0.3


def test_what_counts_as_trained() -> None:
    assert outcome("COMPLETE", 0.8, 0.55) is True
    assert outcome("COMPLETE", 0.3, 0.55) is False
    assert outcome("PRUNED", None, 0.55) is False  # pruned at chance: not trained
    assert outcome("FAIL", None, 0.55) is None  # a failure says nothing about trainability
    assert outcome("COMPLETE", float("nan"), 0.55) is None


def test_failures_alone_do_not_move_the_c_handed_out() -> None:
    """Twelve trials pruned at chance, with memory to spare (T/ξ_C from 0.6 to 2.5: the study at
    T = 300 where the learning rate was to blame): the fitted edge drops towards its floor, but
    the study keeps handing out from its prior's c until a trial trains; once some train (with
    the longest memories) the fit decides."""
    from service.calibration import calibrate

    def pruned(ratio: float) -> tuple[str, float, dict]:
        return ("PRUNED", 0.1, {"xi_c": 300.0 / ratio, "T": 300, "T_log_m1": -2.0})

    failures = [pruned(r) for r in np.linspace(0.6, 2.5, 12)]
    cal, _ = calibrate(13.6, 0.5, 0.5, 0.55, True, failures)
    assert cal.trained == 0 and cal.edge < 1.0 and math.isclose(cal.c, 13.6), cal
    ok = [
        ("COMPLETE", 0.9, {"xi_c": 300.0 / r, "T": 300, "T_log_m1": -1.0}) for r in (0.3, 0.4, 0.5)
    ]
    cal, _ = calibrate(13.6, 0.5, 0.5, 0.55, True, [*failures, *ok])
    assert cal.trained == 3 and cal.c < 1.0, cal


def test_a_calibrated_study_learns_its_edge_from_its_outcomes(client) -> None:
    """A restricted study whose trials train only when T ≤ 3·ξ_C (made-up outcomes: this tests
    the loop, not training): after the background passes its c falls from 13.6 towards 3, the
    study shows it, and the trials handed out from then on satisfy the learnt c. With
    ``calibrate: false`` the same outcomes leave c at 13.6."""
    from tests.support import specs

    service = client.app.state.service
    for name, calibrated in (("learns", True), ("fixed", False)):
        body = specs.prior(name=name, budget=200, seed=3, sampler="random")
        body["prior"] = {"mode": "restrict", "calibrate": calibrated}
        assert client.post("/api/v1/studies", json=body).status_code == 201
        for i in range(60):
            t = client.post(f"/api/v1/studies/{name}/claim", json={"worker_id": f"w{i}"}).json()
            trial = t["trial"]
            u = math.log(trial["theory"]["T"] / trial["theory"]["xi_c"])
            done = {"worker_id": f"w{i}", "value": 0.9} if u <= math.log(3.0) else {
                "worker_id": f"w{i}", "pruned": True}  # fmt: skip
            client.post(f"/api/v1/trials/{trial['trial_id']}/complete", json=done)
            if i % 10 == 9:
                service.background_pass()
        shown = client.get(f"/api/v1/studies/{name}").json()["calibration"]
        if not calibrated:
            assert shown is None
            assert (
                service.cache.get(name, service.store.record(name).optuna_study_id).prior.c == 13.6
            )
            continue
        assert shown["c0"] == 13.6 and shown["outcomes"] == 60 and 0 < shown["trained"] < 60
        assert 1.5 < shown["c"] < 7.0 and shown["low"] < 3.0 * 1.5, shown
        drawn = service.studies.prior_map(name)
        assert f"ξ_C = T/c = 100/{shown['c']:.3g}" in drawn.legend, drawn.legend
        later = [client.post(f"/api/v1/studies/{name}/claim", json={"worker_id": f"x{i}"}).json()
                 for i in range(5)]  # fmt: skip
        for got in later:
            theory = got["trial"]["theory"]
            assert theory["c"] == shown["c"] and theory["xi_c"] >= 100 / shown["c"] * (1 - 1e-6)


def test_p_min_outside_the_unit_interval_is_refused(client) -> None:
    from tests.support import specs

    for bad in (0.0, 1.0, 1.5):
        body = specs.prior(name="pm")
        body["prior"] = {"mode": "restrict", "p_min": bad}
        r = client.post("/api/v1/studies", json=body)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-2:] == ["prior", "p_min"]


def test_the_soft_prior_weighs_by_the_fitted_model() -> None:
    """Once calibrated, soft's π(x) is the model's (cautious) probability of training: a point
    between the learnt edge (3) and the prior's (13.6) loses weight against one with ξ_C = T that
    it had before the outcomes."""
    from service.schemas import StudyCreate
    from service.search import study_prior
    from tests.support import specs

    prior = study_prior(StudyCreate.model_validate(specs.prior(prior={"mode": "soft"})))
    margin = np.array([math.log(13.6 / 9.0), math.log(13.6)])  # log(T/ξ_C) = log 9 and 0

    def odds() -> float:
        a, b = prior.log_density(margin)
        return float(a - b)

    before = odds()
    model = TrainabilityModel(c=13.6, width=prior.width)
    for u, g, y in draw(np.random.default_rng(2), 200, lambda u: float(u <= math.log(3.0))):
        model.add(u, g, y)
    prior.model = model
    after = odds()
    assert before > math.log(0.02) and after < before - math.log(10.0), (before, after)


def test_a_new_study_starts_from_the_outcomes_of_the_same_task(client) -> None:
    """A study of the same cell and task whose trials trained only when T ≤ 3·ξ_C: a new study
    with ``calibrate_from: same_task`` starts from its edge before any outcome of its own, gates
    by that model, and says where it comes from; one with ``none`` starts from the rule; an
    unknown source is a 422 naming ``prior.calibrate_from``."""
    from tests.support import specs

    service = client.app.state.service
    first = specs.prior(name="first", budget=200, seed=3, sampler="random")
    first["prior"] = {"mode": "restrict", "calibrate": False}  # hands out over 13.6's region
    assert client.post("/api/v1/studies", json=first).status_code == 201
    for i in range(60):
        trial = client.post("/api/v1/studies/first/claim", json={"worker_id": f"w{i}"}).json()
        trial = trial["trial"]
        u = math.log(trial["theory"]["T"] / trial["theory"]["xi_c"])
        done = {"worker_id": f"w{i}", "value": 0.9} if u <= math.log(3.0) else {
            "worker_id": f"w{i}", "pruned": True}  # fmt: skip
        client.post(f"/api/v1/trials/{trial['trial_id']}/complete", json=done)
    for name, source in (("second", "same_task"), ("third", ["first"]), ("fresh", "none")):
        body = specs.prior(name=name, budget=10, seed=4)
        body["prior"] = {"mode": "restrict", "calibrate_from": source}
        assert client.post("/api/v1/studies", json=body).status_code == 201
        client.post(f"/api/v1/studies/{name}/claim", json={"worker_id": "w"})  # cached here
    service.background_pass()
    for name in ("second", "third"):
        cal = client.get(f"/api/v1/studies/{name}").json()["calibration"]
        assert cal["sources"] == ["first"] and cal["source_outcomes"] == 60, cal
        assert cal["outcomes"] == 0 and 1.5 < cal["c"] < 7.0, cal
        prior = service.cache.peek(name).prior  # restrict now gates by the fitted model
        assert prior.gate is not None and prior.region
        assert prior.evaluate(prior.region)["ok"].all()
        assert 0.0 < cal["gate_p"] <= 0.5 and cal["gate_p"] == prior.gate_p, cal
    assert client.get("/api/v1/studies/fresh").json()["calibration"] is None  # nothing yet
    body = specs.prior(name="lost")
    body["prior"] = {"mode": "restrict", "calibrate_from": ["nope"]}
    r = client.post("/api/v1/studies", json=body)
    assert r.status_code == 422 and r.json()["field"] == "prior.calibrate_from", r.text


def moment_outcomes(rng: np.random.Generator, n: int) -> list[tuple[float, float, bool]]:
    """(u, s*, trained): trained only with ξ_C ≥ T/5 and an unsaturated cell (s* ≤ 30)."""
    out = []
    for _ in range(n):
        u, s = rng.uniform(-3, 5), math.exp(rng.uniform(-2, 7))
        out.append((u, s, bool(u <= math.log(5.0) and s <= 30.0)))
    return out


def test_the_cell_moment_lowers_a_saturated_points_logit() -> None:
    """From outcomes that need an unsaturated cell the model learns a negative weight on log s*
    past its knee: at the same memory time a saturated point's logit falls far below a calm one's.
    The same outcomes without their moments leave that weight at the prior's 0."""
    from service.calibration import features

    data = moment_outcomes(np.random.default_rng(5), 400)
    model, blind = TrainabilityModel(c=13.6, width=0.5), TrainabilityModel(c=13.6, width=0.5)
    for u, s, y in data:
        model.add(u, 0.0, y, s)
        blind.add(u, 0.0, y)
    (h,) = model.posterior.mean[4:]
    assert h < -0.5, h
    assert blind.posterior.mean[4] == 0.0
    u = math.log(5.0) - 1.0  # memory to spare
    calm, saturated = model.mean_logit([u, u], None, features([1.0, 300.0]))
    assert calm > 0.0 > saturated and calm - saturated > 1.0, (calm, saturated)
    p = model.probability([u, u], feats=features([1.0, 300.0]))
    assert p[0] > 0.5 > p[1], p
    # past the knee (s* above 10) only, at most a factor 100 past it; a missing one at the knee
    got = features([None, math.nan, -1.0, 300.0, 1.0, 1e9])
    want = [0, 0, 0, math.log(30.0), 0, math.log(100.0)]
    assert np.allclose(got[:, 0], want), got


def test_a_restrict_calibrated_from_other_studies_gates_by_its_model() -> None:
    """A restricted study gated by a model fitted elsewhere (``Prior.set_gate``) hands out the
    calm points the rule accepts and refuses the saturated ones it also accepts; a model that
    promises its level nowhere still leaves the best share of the space open (every point of its
    region feasible); no model is the rule again."""
    from service.calibration import source_prior
    from service.prior import MIN_SHARE
    from service.schemas import StudyCreate
    from service.search import study_prior
    from tests.support import specs

    mu_i = {"type": "float", "low": -3.0, "high": 3.0}  # an open input gate fills the cell
    spec = specs.prior(space={"mu_i": mu_i, **specs.PRIOR_SPACE})
    prior = study_prior(StudyCreate.model_validate(spec))
    rng = np.random.default_rng(1)
    points = [
        {"mu_i": rng.uniform(-3, 3), "mu_f": rng.uniform(-2, 8), "nu": rng.uniform(0.3, 3),
         "sigma": rng.uniform(0.3, 2)}
        for _ in range(800)
    ]  # fmt: skip
    rule = prior.evaluate(points)
    model = TrainabilityModel(c=13.6, width=0.5)
    for u, s, y in moment_outcomes(np.random.default_rng(5), 400):
        model.add(u, 0.0, y, s)
    prior.set_gate(TrainabilityModel(c=13.6, width=0.5, base=source_prior(model)), seed=0)
    assert prior.gate_p == prior.p_min == 0.5 and prior.region
    gated = prior.evaluate(points)
    s = rule["cell_moment"]
    calm, saturated = rule["ok"] & (s <= 10.0), rule["ok"] & (s >= 60.0)
    assert calm.sum() >= 20 and saturated.sum() >= 20, (calm.sum(), saturated.sum())
    assert gated["ok"][calm].mean() > 0.5 and gated["ok"][saturated].mean() < 0.1
    assert prior.evaluate(prior.region)["ok"].all()

    hopeful = TrainabilityModel(c=13.6, width=0.5)
    for u in np.linspace(-20.0, 20.0, 200):
        hopeful.add(float(u), 0.0, True)  # everything trained: every point is above the level
    assert prior.set_gate(TrainabilityModel(c=13.6, width=0.5, base=source_prior(hopeful)))
    assert prior.gate_p == 0.5 and prior.evaluate(points)["ok"].all()

    hopeless = TrainabilityModel(c=13.6, width=0.5)
    for _ in range(200):
        hopeless.add(0.0, 0.0, False)  # nothing ever trained: P far below 1/2 everywhere
    assert prior.set_gate(TrainabilityModel(c=13.6, width=0.5, base=source_prior(hopeless)))
    assert prior.gate_p < 0.5 and prior.region
    scanned = len(prior.region) / MIN_SHARE  # about the scan's size
    assert scanned >= 256 and prior.evaluate(prior.region)["ok"].all()

    assert not prior.set_gate(None)
    assert prior.gate is None and not prior.region and prior.gate_p == prior.p_min
    assert np.array_equal(prior.evaluate(points)["ok"], rule["ok"])


def test_a_restrict_gates_only_on_other_studies_outcomes() -> None:
    """``acceptance_model``: a study calibrated on its own outcomes alone keeps the rule (None);
    one started from other studies gates by their model until a trial of its own trains, then by
    the fitted one."""
    from service.calibration import acceptance_model, calibrate, source_prior

    other = TrainabilityModel(c=13.6, width=0.5)
    for u, g, y in draw(np.random.default_rng(3), 60, lambda u: float(u <= math.log(3.0))):
        other.add(u, g, y)
    base = source_prior(other)
    theory = {"xi_c": 50.0, "T": 100, "cell_moment": 1.0}
    failed, ok = ("PRUNED", None, theory), ("COMPLETE", 0.9, theory)
    cal, model = calibrate(13.6, 0.5, 0.5, 0.55, True, [failed, ok])
    assert acceptance_model(cal, model) is None  # its own outcomes only
    cal, model = calibrate(13.6, 0.5, 0.5, 0.55, True, [failed], base=base)
    gate = acceptance_model(cal, model)
    assert gate is not model and gate.base is base and not gate.outcomes  # the others' alone
    cal, model = calibrate(13.6, 0.5, 0.5, 0.55, True, [failed, ok], base=base)
    assert acceptance_model(cal, model) is model and cal.trained == 1
