"""Tests of the trained models and their initialization (workers/models.py, docs/theory.md §1-2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meanfield import CELLS, MEMORY_GATE, Config, Inputs, MeanFieldError, critical_init
from meanfield._simcells import TiedSampler, step
from workers.models import MinimalRNN, SeqModel, build_model, initialize, resolve_init

torch.set_num_threads(1)

N, N_IN = 256, 64

# Distinct values per gate (index k in the cell's gate order), so a swapped block is caught.
MU = (-1.0, 2.0, 0.5, 3.0)
RHO = (0.1, 0.4, 0.2, 0.3)
SIGMA = (0.5, 1.5, 1.0, 2.0)
NU = (0.6, 1.2, 0.9, 1.5)


def _config(cell: str, weights: str = "gaussian") -> Config:
    values = {}
    for k, g in enumerate(CELLS[cell]):
        values |= {f"mu_{g}": MU[k], f"rho_{g}": RHO[k], f"sigma_{g}": SIGMA[k], f"nu_{g}": NU[k]}
    return Config.from_flat(cell, values, weights=weights)


def _blocks(model: SeqModel) -> dict[str, dict[str, torch.Tensor | int | None]]:
    """Per gate: input weights W (and their fan-in), recurrent weights U (or None), bias b."""
    core, n = model.core, model.hidden_size
    if isinstance(core, MinimalRNN):
        return {
            "e": {"W": core.weight_xe, "fan_in": core.input_size, "U": None, "b": core.bias_e},
            "u": {"W": core.weight_eu, "fan_in": n, "U": core.weight_hu, "b": core.bias_u},
        }
    out = {}
    for k, g in enumerate(CELLS[model.cell]):
        rows = slice(k * n, (k + 1) * n)
        out[g] = {
            "W": core.weight_ih_l0[rows],
            "fan_in": core.input_size,
            "U": core.weight_hh_l0[rows],
            "b": core.bias_ih_l0[rows],
        }
    return out


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("weights", ["gaussian", "orthogonal"])
def test_initialize_statistics(cell: str, weights: str) -> None:
    cfg = _config(cell, weights)
    model = SeqModel(cell, N_IN, N, 3)
    initialize(model, cfg, torch.Generator().manual_seed(0))
    eye = torch.eye(N, dtype=torch.float64)
    for g, blk in _blocks(model).items():
        p = cfg[g]
        mu, rho, sigma, nu = (float(getattr(p, hp)) for hp in ("mu", "rho", "sigma", "nu"))
        b = blk["b"].detach().double()
        assert abs(b.mean().item() - mu) < 5 * rho / math.sqrt(N), (g, "bias mean")
        assert b.std().item() / rho == pytest.approx(1.0, abs=0.25), (g, "bias std")
        w = blk["W"].detach().double()
        assert w.std().item() * math.sqrt(blk["fan_in"]) / sigma == pytest.approx(1, abs=0.04), g
        assert abs(w.mean().item()) < 5 * w.std().item() / math.sqrt(w.numel()), g
        if blk["U"] is None:
            continue
        u = blk["U"].detach().double()
        gram = u.T @ u / nu**2
        if weights == "orthogonal":
            torch.testing.assert_close(gram, eye, atol=1e-5, rtol=0)
            torch.testing.assert_close(u @ u.T / nu**2, eye, atol=1e-5, rtol=0)
        else:
            assert u.std().item() * math.sqrt(N) / nu == pytest.approx(1, abs=0.02), g
            assert (gram - eye).abs().max() > 0.1  # a Gaussian matrix is not orthogonal
    if cell != "minimalrnn":
        assert torch.all(model.core.bias_hh_l0 == 0)


def _numpy_sampler(model: SeqModel, cfg: Config) -> TiedSampler:
    """The engine's tied sampler, holding the torch module's weights instead of its own draws."""
    core, n = model.core, model.hidden_size
    s = TiedSampler(cfg, np.random.default_rng(0), n, model.input_size)

    def a(t: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(t.detach().double().numpy())

    if isinstance(core, MinimalRNN):
        s.stacked = {"W": a(core.weight_xe), "V": a(core.weight_eu), "U": a(core.weight_hu)}
        s.fixed_bias = {"e": a(core.bias_e), "u": a(core.bias_u)}
        return s
    w_ih, w_hh = a(core.weight_ih_l0), a(core.weight_hh_l0)
    bias = a(core.bias_ih_l0 + core.bias_hh_l0)
    gates = CELLS[model.cell]
    s.fixed_bias = {g: bias[k * n : (k + 1) * n] for k, g in enumerate(gates)}
    if model.cell == "gru":  # bias_hn sits inside the reset product: the engine has none
        assert torch.all(core.bias_hh_l0[2 * n :] == 0)
        s.stacked = {
            "W": w_ih[: 2 * n],
            "U": w_hh[: 2 * n],
            "Wn": w_ih[2 * n :],
            "Un": w_hh[2 * n :],
        }
    else:
        s.stacked = {"W": w_ih, "U": w_hh}
    assert {k: v.shape for k, v in s.stacked.items()} == {
        k: v.shape
        for k, v in TiedSampler(cfg, np.random.default_rng(0), n, model.input_size).stacked.items()
    }
    return s


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("weights", ["gaussian", "orthogonal"])
def test_forward_equals_engine_tied_step(cell: str, weights: str) -> None:
    """The torch module is exactly the cell the theory and the simulator describe."""
    n, n_in, steps = 32, 8, 6
    cfg = _config(cell, weights)
    model = SeqModel(cell, n_in, n, 2)
    initialize(model, cfg, torch.Generator().manual_seed(1))
    x = 1.5 * torch.randn(steps, 2, n_in, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model.core(x)
    states = out[0]
    sampler = _numpy_sampler(model, cfg)
    state = tuple(np.zeros((2, n)) for _ in range(2 if cell == "lstm" else 1))
    for t in range(steps):
        state = step(cell, state, x[t].double().numpy(), sampler)
        np.testing.assert_allclose(states[t].numpy(), state[0], atol=1e-5, rtol=0)
    assert np.abs(state[0]).max() > 0.1  # the comparison is not trivially between zeros
    if cell == "lstm":
        np.testing.assert_allclose(out[1][1][0].numpy(), state[1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell", list(CELLS))
def test_default_preset_is_pytorch_init(cell: str) -> None:
    model, cfg = build_model(cell, N_IN, N, 2, init="default", seed=3)
    assert cfg is None and resolve_init(cell, "default") is None
    bound = 1 / math.sqrt(N)
    core_params = dict(model.core.named_parameters())
    for name, p in core_params.items():
        assert p.abs().max().item() <= bound, name
        if p.numel() > 10_000:
            assert p.std().item() * math.sqrt(3 * N) == pytest.approx(1, abs=0.03), name
    if cell != "minimalrnn":
        assert core_params["bias_hh_l0"].abs().max() > 0  # untouched, not zeroed


@pytest.mark.parametrize("cell", ["lstm", "gru", "minimalrnn"])
def test_critical_preset(cell: str) -> None:
    inputs = Inputs(1.0)
    res = critical_init(cell, 50, inputs)
    model, cfg = build_model(cell, N_IN, N, 2, init="critical", T=50, inputs=inputs)
    assert cfg is not None and cfg.weights == "orthogonal"
    assert cfg.to_flat_dict() == res.params
    gate = MEMORY_GATE[cell]
    blk = _blocks(model)[gate]
    torch.testing.assert_close(blk["b"], torch.full((N,), res.mu), atol=1e-6, rtol=0)  # rho = 0
    nu = res.params[f"nu_{gate}"]
    u = blk["U"].detach().double()
    torch.testing.assert_close(
        u.T @ u, nu**2 * torch.eye(N, dtype=torch.float64), atol=1e-5, rtol=0
    )
    gaussian = resolve_init(cell, "critical", T=50, inputs=inputs, weights="gaussian")
    assert gaussian.weights == "gaussian"
    # The trainability constant c (target ξ_C = T/c) reaches the engine.
    with_c = resolve_init(cell, "critical", T=100, inputs=inputs, c=2.0)
    assert with_c.to_flat_dict() == critical_init(cell, 100, inputs, c=2.0).params
    assert (
        with_c.to_flat_dict() != resolve_init(cell, "critical", T=100, inputs=inputs).to_flat_dict()
    )


def test_critical_preset_with_shared_inputs_picks_the_isometric_nu() -> None:
    """The copy task (shared inputs) at T = 30: T log m1 = -c sits on its own bound (c = 1), and
    every candidate used to fail it by rounding, leaving the smallest nu (0.25). The rule now
    takes the largest nu whose T-step spread stays within the bound: 0.5 (0.75 spreads 1.09)."""
    from contract.tasks import task_spec

    s = task_spec("copy", 30)
    inputs = Inputs(R=s.R, regime=s.regime, R_ab=s.R_ab)
    res = critical_init("lstm", 30, inputs)
    assert res.params["nu_f"] == 0.5 and res.converged
    assert abs(res.isometry.log_m1) == pytest.approx(1.0, abs=0.01)
    assert res.isometry.spread <= 1.0
    wider = critical_init("lstm", 30, inputs, nu_candidates=(0.75,))
    assert wider.isometry.spread > 1.0  # why 0.75 is not taken


def test_vanilla_has_no_critical_preset() -> None:
    with pytest.raises(MeanFieldError, match="memory gate") as err:
        resolve_init("vanilla", "critical", T=50)
    assert err.value.field == "init"


@pytest.mark.parametrize(
    ("cell", "init", "field"),
    [
        ("lstm", {"mu_q": 1.0}, "mu_q"),  # no gate q
        ("gru", {"bogus": 1.0}, "bogus"),
        ("gru", {"nu": -1.0}, "nu"),
        ("minimalrnn", {"mu_u": float("nan")}, "mu_u"),
        ("lstm", {"mu_f": [1.0, 2.0]}, "mu_f"),  # one configuration only
        ("lstm", "nope", "init"),
        ("lstm", "critical", "T"),  # T missing
        ("rnn", "default", "cell"),
    ],
)
def test_resolve_init_errors_name_the_field(cell: str, init: object, field: str) -> None:
    with pytest.raises(MeanFieldError) as err:
        resolve_init(cell, init)
    assert err.value.field == field


def test_mapping_and_mismatched_config() -> None:
    cfg = resolve_init("lstm", {"mu_f": 4, "nu": 0.5})
    assert cfg.weights == "gaussian"
    assert cfg.to_flat_dict()["mu_f"] == 4.0 and cfg.to_flat_dict()["nu_g"] == 0.5
    assert resolve_init("lstm", {}, weights="orthogonal").weights == "orthogonal"
    with pytest.raises(MeanFieldError) as err:
        initialize(SeqModel("gru", 3, 8, 1), cfg)
    assert err.value.field == "cell"
    with pytest.raises(MeanFieldError):
        SeqModel("gru", 3, 0, 1)


@pytest.mark.parametrize("cell", list(CELLS))
def test_output_steps(cell: str) -> None:
    model, _ = build_model(cell, 5, 16, 4, output_steps=3, init="default")
    x = torch.randn(10, 7, 5)
    y = model(x)
    assert y.shape == (3, 7, 4)
    states, _ = model.core(x)
    torch.testing.assert_close(y, model.readout(states[-3:]))
    with pytest.raises(ValueError, match="seq >= 3"):
        model(x[:2])


def test_minimalrnn_gradients_flow() -> None:
    model, _ = build_model("minimalrnn", 4, 16, 2, init={"mu_u": 1.0}, seed=0)
    x = torch.randn(12, 5, 4, requires_grad=True)
    model(x).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name
    assert x.grad[0].abs().max() > 0  # through all twelve steps
    core = MinimalRNN(3, 4).double()
    xs = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: core(v)[0], (xs,))


@pytest.mark.parametrize("cell", ["gru", "minimalrnn"])
def test_deterministic_init(cell: str) -> None:
    cfg = _config(cell, "orthogonal")

    def weights(seed: int) -> list[torch.Tensor]:
        model = SeqModel(cell, 6, 16, 2)
        initialize(model, cfg, torch.Generator().manual_seed(seed))
        return [p.detach().clone() for p in model.core.parameters()]

    a, b, c = weights(7), weights(7), weights(8)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not any(torch.equal(p, q) for p, q in zip(a, c, strict=True) if p.abs().max() > 0)

    state = torch.get_rng_state()
    m1, _ = build_model(cell, 6, 16, 2, init="critical", T=20, seed=5)
    m2, _ = build_model(cell, 6, 16, 2, init="critical", T=20, seed=5)
    m3, _ = build_model(cell, 6, 16, 2, init="critical", T=20, seed=6)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not torch.equal(s1["readout.weight"], s3["readout.weight"])


@pytest.mark.parametrize("cell", ["lstm", "gru", "minimalrnn"])
def test_chrono_sets_the_keep_gate_bias_to_log_uniform_and_leaves_the_rest(cell: str) -> None:
    """Chrono (Tallec & Ollivier 2018): per unit the keep gate's bias is log U[1, T − 1] (the
    LSTM's input gate its negative), the matching bias_hh rows zero, every weight PyTorch's own
    (the same as init='default' with the same seed); reproducible from the seed."""
    T, n = 200, 256
    model, cfg = build_model(cell, 3, n, 2, init="chrono", T=T, seed=5)
    default, _ = build_model(cell, 3, n, 2, init="default", seed=5)
    assert cfg is None
    again, _ = build_model(cell, 3, n, 2, init="chrono", T=T, seed=5)
    for (name, p), (_, q), (_, d) in zip(
        model.named_parameters(), again.named_parameters(), default.named_parameters(), strict=True
    ):
        assert torch.equal(p, q), name
        if "bias" not in name:
            assert torch.equal(p, d), name  # PyTorch's own weights, untouched
    core = model.core
    if cell == "minimalrnn":
        keep = core.bias_u.detach()
    else:
        keep = core.bias_ih_l0.detach()[n : 2 * n]
        assert torch.count_nonzero(core.bias_hh_l0.detach()[n : 2 * n]) == 0
    assert float(keep.min()) >= 0.0 and float(keep.max()) <= math.log(T - 1) + 1e-6
    # log U[1, T-1] has mean ((T-1) log(T-1) - (T-2)) / (T-2), 4.29 at T = 200: 256 draws, ±0.2
    expected = ((T - 1) * math.log(T - 1) - (T - 2)) / (T - 2)
    assert abs(float(keep.mean()) - expected) < 0.2
    if cell == "lstm":
        assert torch.equal(core.bias_ih_l0.detach()[:n], -keep)
        assert torch.count_nonzero(core.bias_hh_l0.detach()[:n]) == 0


def test_chrono_needs_a_memory_gate_and_a_bridge_length() -> None:
    with pytest.raises(MeanFieldError, match="no memory gate"):
        build_model("vanilla", 3, 8, 2, init="chrono", T=10)
    with pytest.raises(MeanFieldError, match="needs the bridge length"):
        build_model("lstm", 3, 8, 2, init="chrono")
