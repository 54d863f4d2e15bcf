"""madeflow.sbi: sbi's density-estimator contract, NPE and NLE, pickling, z-scoring, bad input."""

from __future__ import annotations

import math
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("sbi")

from sbi.inference import NLE, NPE  # noqa: E402
from sbi.utils import BoxUniform  # noqa: E402

import madeflow  # noqa: E402
import madeflow.sbi as msbi  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:Maximum number of epochs"),
    pytest.mark.filterwarnings("ignore:.*log-probability is unnormalized"),
    pytest.mark.filterwarnings("ignore:`.log_prob\\(\\)` is deprecated"),
]

BUILDERS = {
    "maf": msbi.build_maf,
    "maf_mog": msbi.build_maf_mog,
    "made_mog": msbi.build_made_mog,
}
DOC = Path(__file__).parent.parent / "docs" / "sbi.md"
SMALL = dict(hidden_features=16, num_transforms=2, num_components=3)


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """sbi's trainers write TensorBoard logs to ./sbi-logs: keep them out of the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def float64_default():
    """sbi works in float32: override the suite's float64 default for this module."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield torch.float32
    torch.set_default_dtype(old)


def simulate(theta: torch.Tensor) -> torch.Tensor:
    """A tiny simulator: 3 noisy features of a 2-parameter vector."""
    mix = torch.tensor([[1.0, 0.5, -1.0], [0.0, 1.0, 2.0]])
    return theta @ mix + 0.1 * torch.randn(theta.shape[0], 3)


def data(n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    theta = 2 * torch.rand(n, 2) - 1
    return theta, simulate(theta)


def build(name: str, theta: torch.Tensor, x: torch.Tensor, **options):
    return BUILDERS[name](theta, x, **{**SMALL, **options})


# ----------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("name", BUILDERS)
def test_shapes_follow_sbis_sample_first_layout(name):
    theta, x = data()
    est = build(name, theta, x)
    assert isinstance(est, msbi.MadeflowDensityEstimator)
    assert est.input_shape == (2,) and est.condition_shape == (3,)
    assert est.log_prob(theta[:5], x[:5]).shape == (1, 5)
    assert est.log_prob(theta[:20].reshape(4, 5, 2), x[:5]).shape == (4, 5)
    assert est.log_prob(theta[:20].reshape(4, 5, 2), x[:20].reshape(4, 5, 3)).shape == (4, 5)
    assert est.log_prob(theta[:20].reshape(4, 5, 2), x[:1]).shape == (4, 5)  # broadcast
    assert est.loss(theta[:5], x[:5]).shape == (5,)
    assert est.sample((7,), x[:3]).shape == (7, 3, 2)
    assert est.sample((2, 4), x[:3]).shape == (2, 4, 3, 2)
    samples, log_probs = est.sample_and_log_prob((7,), x[:3])
    assert samples.shape == (7, 3, 2) and log_probs.shape == (7, 3)
    assert est.inverse_transform(theta[:5], x[:5]).shape == (5, 2)


@pytest.mark.parametrize("name", BUILDERS)
def test_log_prob_broadcast_equals_explicit_expansion(name):
    theta, x = data()
    est = build(name, theta, x).eval()
    grid = theta[:12].reshape(4, 3, 2)
    a = est.log_prob(grid, x[:3])
    b = est.log_prob(grid, x[:3].expand(4, 3, 3))
    c = est.log_prob(grid.reshape(12, 2), x[:3].repeat(4, 1)).reshape(4, 3)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


@pytest.mark.parametrize("name", BUILDERS)
def test_sample_and_log_prob_equals_log_prob_of_the_samples(name):
    theta, x = data()
    est = build(name, theta, x).eval()
    with torch.no_grad():  # the one-pass route: log-densities summed inside the solve
        samples, log_probs = est.sample_and_log_prob((50,), x[:4])
    torch.testing.assert_close(log_probs, est.log_prob(samples, x[:4]), atol=1e-4, rtol=1e-4)
    samples, log_probs = est.sample_and_log_prob((50,), x[:4])  # the differentiable route
    assert log_probs.requires_grad and not samples.requires_grad
    torch.testing.assert_close(log_probs, est.log_prob(samples, x[:4]), atol=1e-4, rtol=1e-4)


def test_sample_and_log_prob_with_batch_norm_layers():
    theta, x = data()
    est = msbi.build_maf(theta, x, hidden_features=16, num_transforms=3, use_batch_norm=True)
    est.train()
    est.loss(theta, x).mean().backward()  # batch norm statistics move
    est.eval()
    with torch.no_grad():
        samples, log_probs = est.sample_and_log_prob((30,), x[:2])
    torch.testing.assert_close(log_probs, est.log_prob(samples, x[:2]), atol=1e-4, rtol=1e-4)


def test_multidimensional_condition_through_an_embedding_net():
    theta = torch.rand(200, 2)
    x = torch.randn(200, 2, 5) + theta[:, :, None]
    embedding = nn.Sequential(nn.Flatten(), nn.Linear(10, 4))
    est = msbi.build_maf(theta, x, embedding_net=embedding, hidden_features=16, num_transforms=2)
    assert est.condition_shape == (2, 5) and est.embedding_net[-1] is embedding
    assert est.log_prob(theta[:6].reshape(2, 3, 2), x[:3]).shape == (2, 3)
    assert est.sample((4,), x[:3]).shape == (4, 3, 2)


def test_multidimensional_input_is_flattened_and_restored():
    theta = torch.randn(200, 2, 2)
    x = theta.reshape(200, 4) + 0.1 * torch.randn(200, 4)
    est = msbi.build_maf(theta, x, hidden_features=16, num_transforms=2)
    assert est.input_shape == (2, 2)
    assert est.log_prob(theta[:5], x[:5]).shape == (1, 5)
    assert est.sample((3,), x[:2]).shape == (3, 2, 2, 2)


# ------------------------------------------------------------------------------- z-scoring
@pytest.mark.parametrize("z_score", ["independent", "structured", "none", None])
def test_z_scoring_keeps_the_density_normalized(z_score):
    # A 2-D density integrates to 1 over theta: the standardization's Jacobian is in log_prob.
    theta = torch.randn(500, 2) * torch.tensor([3.0, 0.2]) + torch.tensor([5.0, -1.0])
    x = theta + 0.1 * torch.randn(500, 2)
    est = msbi.build_maf(theta, x, z_score_x=z_score, hidden_features=16, num_transforms=2)
    _, std = theta.mean(0), theta.std(0)
    if z_score in ("none", None):
        std = torch.ones(2)
    elif z_score == "structured":
        std = theta.std(1).mean().expand(2)
    center = theta.mean(0) if z_score not in ("none", None) else torch.zeros(2)
    axes = [torch.linspace(c - 9 * s, c + 9 * s, 300) for c, s in zip(center, std)]
    assert _integral(est, axes, x[:1]) == pytest.approx(1.0, abs=0.02)


def test_transform_to_unconstrained_keeps_the_density_normalized_on_the_box():
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta, x = data()
    est = msbi.build_maf(theta, x, z_score_x="transform_to_unconstrained", x_dist=prior, **SMALL)
    samples = est.sample((500,), x[:1])
    assert bool(((samples > -1) & (samples < 1)).all())
    axes = [torch.linspace(-1 + 1e-4, 1 - 1e-4, 400)] * 2
    assert _integral(est, axes, x[:1]) == pytest.approx(1.0, abs=0.03)


def test_transform_to_unconstrained_needs_the_prior():
    theta, x = data()
    with pytest.raises(ValueError, match="x_dist"):
        msbi.build_maf(theta, x, z_score_x="transform_to_unconstrained")


def test_z_scoring_statistics_match_sbis_own():
    from sbi.utils.sbiutils import z_standardization

    theta = torch.randn(300, 3) * 4 + 2
    x = torch.randn(300, 2)
    for structured in (False, True):
        option = "structured" if structured else "independent"
        est = msbi.build_maf(theta, x, z_score_x=option, hidden_features=16, num_transforms=1)
        mean, std = z_standardization(theta, structured)
        torch.testing.assert_close(est._input_shift, mean.expand(3))
        torch.testing.assert_close(est._input_scale, std.expand(3))


def _integral(est, axes, condition) -> float:
    a, b = torch.meshgrid(*axes, indexing="ij")
    grid = torch.stack([a.reshape(-1), b.reshape(-1)], -1)
    with torch.no_grad():
        density = est.log_prob(grid, condition).exp().reshape(a.shape)
    return float(torch.trapezoid(torch.trapezoid(density, axes[1], dim=1), axes[0]))


# ----------------------------------------------------------------------- every output sees x
@pytest.mark.parametrize("name", BUILDERS)
def test_every_output_of_every_made_sees_the_condition(name):
    theta, x = data()
    est = build(name, theta, x)
    mades = [m for m in est.modules() if isinstance(m, madeflow.MADE)]
    assert mades
    for made in mades:
        context = torch.randn(1, made.context_dim, requires_grad=True)
        params = made(torch.randn(1, made.input_dim), context)
        params = params if isinstance(params, tuple) else (params,)
        for p in params:
            p = p.reshape(1, -1, made.input_dim)
            for d in range(made.input_dim):
                (grad,) = torch.autograd.grad(p[..., d].sum(), context, retain_graph=True)
                assert grad.abs().sum() > 0, f"output {d} ignores the condition"


def test_the_first_dimension_depends_on_the_condition_with_one_layer():
    # With one MAF layer, p(theta_1 | x) is the first conditional: it must move with x.
    theta, x = data()
    est = msbi.build_maf(theta, x, hidden_features=16, num_transforms=1, z_score_y="none")
    first = est.net.transforms[0].nn.get_permutation()[0]
    point = torch.zeros(1, 2)
    x0, x1 = torch.zeros(1, 3), torch.ones(1, 3)
    with torch.no_grad():
        noise0 = est.inverse_transform(point, x0)[0, first]
        noise1 = est.inverse_transform(point, x1)[0, first]
    assert noise0 != noise1


# ---------------------------------------------------------------------------- NPE and NLE
@pytest.mark.parametrize("name", BUILDERS)
def test_npe_trains_samples_and_scores(name):
    torch.manual_seed(1)
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta, x = data(400)
    builder = msbi.posterior_nn(name, **SMALL)
    inference = NPE(prior, density_estimator=builder, show_progress_bars=False)
    inference.append_simulations(theta, x).train(max_num_epochs=3)
    posterior = inference.build_posterior()
    x_o = x[:1]
    samples = posterior.sample((20,), x=x_o, show_progress_bars=False)
    assert samples.shape == (20, 2)
    assert posterior.log_prob(samples, x=x_o).shape == (20,)
    assert posterior.sample_batched((5,), x=x[:3], show_progress_bars=False).shape == (5, 3, 2)


def test_npe_accepts_the_builder_itself():
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta, x = data(300)
    inference = NPE(prior, density_estimator=msbi.build_maf, show_progress_bars=False)
    net = inference.append_simulations(theta, x).train(max_num_epochs=2)
    assert isinstance(net, msbi.MadeflowDensityEstimator)
    assert net.input_shape == (2,) and net.condition_shape == (3,)


def test_npe_learns_a_linear_gaussian_posterior():
    torch.manual_seed(0)
    prior = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
    theta = prior.sample((2000,))
    x = theta + 0.5 * torch.randn(2000, 2)
    inference = NPE(prior, density_estimator=msbi.posterior_nn("maf", hidden_features=32))
    inference.append_simulations(theta, x).train(max_num_epochs=40, show_train_summary=False)
    x_o = torch.tensor([[1.0, -1.0]])
    samples = inference.build_posterior().sample((4000,), x=x_o, show_progress_bars=False)
    # Analytic posterior: N(x / (1 + 0.25), 0.25 / 1.25).
    torch.testing.assert_close(samples.mean(0), x_o[0] / 1.25, atol=0.08, rtol=0)
    torch.testing.assert_close(samples.std(0), torch.full((2,), 0.2**0.5), atol=0.06, rtol=0)


@pytest.mark.parametrize("name", ["maf", "made_mog"])
def test_nle_trains_and_scores_the_likelihood(name):
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta, x = data(400)
    inference = NLE(prior, density_estimator=msbi.likelihood_nn(name, **SMALL))
    net = inference.append_simulations(theta, x).train(max_num_epochs=3)
    assert net.input_shape == (3,) and net.condition_shape == (2,)  # models x given theta
    posterior = inference.build_posterior()
    assert posterior.log_prob(theta[:5], x=x[:1]).shape == (5,)
    assert net.log_prob(x[:5], theta[:5]).shape == (1, 5)


# ----------------------------------------------------------------------------------- pickle
@pytest.mark.parametrize("name", BUILDERS)
def test_a_pickled_posterior_samples_and_scores_identically(name):
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta, x = data(300)
    inference = NPE(prior, density_estimator=msbi.posterior_nn(name, **SMALL))
    inference.append_simulations(theta, x).train(max_num_epochs=2)
    posterior = inference.build_posterior()
    x_o = x[:1]
    posterior.sample((5,), x=x_o, show_progress_bars=False)  # warm the solver's caches
    clone = pickle.loads(pickle.dumps(posterior))
    for post in (posterior, clone):
        torch.manual_seed(3)
        post.sample_draws = post.sample((100,), x=x_o, show_progress_bars=False)
    torch.testing.assert_close(posterior.sample_draws, clone.sample_draws, rtol=0, atol=0)
    draws = posterior.sample_draws
    log_probs = []
    for post in (posterior, clone):
        torch.manual_seed(4)  # sbi estimates the prior-leakage correction by sampling
        log_probs.append(post.log_prob(draws, x=x_o))
    torch.testing.assert_close(log_probs[0], log_probs[1], rtol=0, atol=0)
    torch.testing.assert_close(
        posterior.posterior_estimator.log_prob(draws, x_o),
        clone.posterior_estimator.log_prob(draws, x_o),
        rtol=0,
        atol=0,
    )


def test_torch_save_round_trip_of_the_estimator(tmp_path):
    theta, x = data()
    est = msbi.build_maf_mog(theta, x, **SMALL).eval()
    torch.save(est, tmp_path / "est.pt")
    loaded = torch.load(tmp_path / "est.pt", weights_only=False)
    torch.testing.assert_close(loaded.log_prob(theta[:5], x[:5]), est.log_prob(theta[:5], x[:5]))


# ------------------------------------------------------------------------ devices and dtypes
def test_standardization_follows_the_module_to_another_dtype():
    theta, x = data()
    est = msbi.build_maf(theta, x, **SMALL).double()
    assert est._input_shift.dtype == torch.float64
    out = est.log_prob(theta[:4].double(), x[:4].double())
    assert out.dtype == torch.float64
    assert est.sample((3,), x[:2].double()).dtype == torch.float64


# ------------------------------------------------------------------------------- noise map
@pytest.mark.parametrize("name", BUILDERS)
def test_inverse_transform_maps_samples_to_standard_normal_noise(name):
    theta, x = data()
    est = build(name, theta, x).eval()
    condition = x[:1]
    samples = est.sample((4000,), condition)[:, 0]
    with torch.no_grad():
        noise = est.inverse_transform(samples, condition)
    assert noise.mean(0).abs().max() < 0.08
    assert (noise.std(0) - 1).abs().max() < 0.08


# ------------------------------------------------------------------------------- bad input
def test_theta_and_x_with_different_numbers_of_simulations():
    theta, x = data()
    with pytest.raises(ValueError, match="300 simulations but batch_y has 299"):
        msbi.build_maf(theta, x[:-1])


def test_nan_simulations_are_named_at_build_time():
    theta, x = data()
    x[[4, 7]] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or Inf in 2 of 300 simulations.*\[4, 7\]"):
        msbi.build_maf(theta, x)


def test_npe_drops_nan_simulations_before_the_builder_as_with_sbis_own():
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta, x = data(300)
    x[3] = float("nan")
    inference = NPE(prior, density_estimator=msbi.build_maf, show_progress_bars=False)
    net = inference.append_simulations(theta, x).train(max_num_epochs=1)
    assert isinstance(net, msbi.MadeflowDensityEstimator)


def test_one_dimensional_batches_are_refused_with_a_hint():
    with pytest.raises(ValueError, match="unsqueeze"):
        msbi.build_maf(torch.randn(100), torch.randn(100, 2))


def test_wrong_condition_shape():
    theta, x = data()
    est = msbi.build_maf(theta, x, **SMALL)
    with pytest.raises(ValueError, match=r"condition of shape \(5, 4\).*\(3,\)"):
        est.log_prob(theta[:5], torch.randn(5, 4))
    with pytest.raises(ValueError, match="condition"):
        est.sample((2,), torch.randn(5, 4))


def test_swapped_input_and_condition_get_a_hint():
    theta, x = data()
    est = msbi.build_maf(theta, x, **SMALL)
    with pytest.raises(ValueError, match="likelihood_nn"):
        est.log_prob(x[:5], x[:5])


def test_nan_condition_at_sampling_time():
    theta, x = data()
    est = msbi.build_maf(theta, x, **SMALL)
    bad = x[:2].clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="condition contains NaN or Inf in 1 of 2 rows"):
        est.sample((3,), bad)


def test_options():
    theta, x = data()
    with pytest.raises(ValueError, match="dropout"):
        msbi.build_maf(theta, x, dropout_probability=0.1)
    with pytest.raises(ValueError, match="activation"):
        msbi.build_maf(theta, x, activation="swish")
    with pytest.raises(ValueError, match="model must be one of"):
        msbi.posterior_nn("nsf")
    with pytest.raises(TypeError, match="z_score_theta"):
        msbi.posterior_nn("maf", z_score_y="none")
    with pytest.warns(UserWarning, match="ignoring unknown option hiden_features"):
        msbi.build_maf(theta, x, hiden_features=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        msbi.build_maf(theta, x, num_bins=8, tail_bound=3.0, **SMALL)  # sbi's, ignored quietly
    est = msbi.build_maf(theta, x, hidden_features=[8, 12], num_transforms=3, activation="relu")
    mades = [m for m in est.modules() if isinstance(m, madeflow.MADE)]
    assert len(mades) == 3 and mades[0].hidden_dims == (8, 12)
    assert isinstance(mades[0].activation, nn.ReLU)


def test_defaults_are_the_documented_ones():
    theta, x = data()
    est = msbi.build_maf(theta, x)
    mades = [m for m in est.modules() if isinstance(m, madeflow.MADE)]
    assert len(mades) == msbi.DEFAULTS["num_transforms"]
    width, blocks = msbi.DEFAULTS["hidden_features"], msbi.DEFAULTS["num_blocks"]
    assert mades[0].hidden_dims == (width,) * blocks
    doc = DOC.read_text()
    for key, value in msbi.DEFAULTS.items():
        shown = re.escape(value if isinstance(value, str) else repr(value))
        assert re.search(rf"\| `{key}` \| `{shown}` \|", doc), key


# ------------------------------------------------------------------------ optional dependency
def test_import_madeflow_does_not_import_sbi():
    code = "import sys, madeflow; assert 'sbi' not in sys.modules, 'sbi was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_sbi_names_the_extra():
    code = (
        "import sys; sys.modules['sbi'] = None\n"
        "try:\n    import madeflow.sbi\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "madeflow[sbi]"' in out.stdout


def test_docs_usage_runs_as_written():
    doc = DOC.read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert blocks
    namespace: dict = {}
    exec(compile(blocks[0], "docs/sbi.md", "exec"), namespace)  # noqa: S102
    assert math.isfinite(float(namespace["log_prob"].sum()))
