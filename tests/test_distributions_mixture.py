"""GaussianMixtureMADE: closed form, component validation, exact noise-driven sampling."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from madeflow.distributions import GaussianMADE, GaussianMixtureMADE


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_num_components_is_validated(k):
    with pytest.raises(ValueError, match="num_components"):
        GaussianMixtureMADE(3, [8], num_components=k)


def test_one_dimension_matches_hand_computed_mixture():
    est = GaussianMixtureMADE(1, [4], num_components=4)
    loc, raw, logits = (p[0, :, 0] for p in est.made(torch.zeros(1, 1)))
    scale = (10.0 * torch.tanh(raw / 10.0)).exp()
    x = torch.randn(9, 1) * 3
    comp = Normal(loc, scale).log_prob(x) + torch.log_softmax(logits, -1)  # (9, K)
    torch.testing.assert_close(est.log_prob(x), comp.logsumexp(-1))


def test_single_component_is_a_gaussian_made():
    mix = GaussianMixtureMADE(3, [8], num_components=1, seed=5)
    gauss = GaussianMADE(3, [8], seed=5)
    # Output rows are (loc, log-scale, logit) blocks of D rows each: drop the logit block.
    state = {
        key: value[:6] if key.startswith("made.output_layer.") else value
        for key, value in mix.state_dict().items()
    }
    gauss.load_state_dict(state)
    x = torch.randn(6, 3)
    # The mixing logit of a single component is irrelevant.
    torch.testing.assert_close(mix.log_prob(x), gauss.log_prob(x))
    noise = mix.draw_noise(torch.Size((4, 3)))
    assert mix.sample_from_noise(noise).shape == (4, 3)


def _fixed_params():
    # One dimension, three well-separated components with weights 0.2, 0.5, 0.3.
    loc = torch.tensor([-10.0, 0.0, 10.0]).view(1, 3, 1)
    raw = torch.log(torch.tensor([0.1, 1.0, 2.0])).view(1, 3, 1)
    logits = torch.log(torch.tensor([0.2, 0.5, 0.3])).view(1, 3, 1)
    return loc, raw, logits


def test_step_picks_component_by_inverse_cdf_and_rescales_remainder():
    est = GaussianMixtureMADE(1, [4], num_components=3)
    params = _fixed_params()
    u = torch.tensor([0.1, 0.45, 0.85, 0.2 + 0.5 * 0.975])
    x = torch.stack([est.step(params, v.view(1, 1)) for v in u]).flatten()
    # Midpoints of each component's CDF interval give its mean; v = 0.975 gives mean + 1.96 sd.
    expected = torch.tensor([-10.0, 0.0, 10.0, 1.959963984540054])
    torch.testing.assert_close(x, expected)


def test_step_samples_follow_the_mixture():
    est = GaussianMixtureMADE(1, [4], num_components=3)
    loc, raw, logits = (p.expand(20000, 3, 1) for p in _fixed_params())
    x = est.step((loc, raw, logits), torch.rand(20000, 1)).flatten()
    for lo, hi, w, m, s in [(-20, -5, 0.2, -10, 0.1), (-5, 5, 0.5, 0, 1), (5, 30, 0.3, 10, 2)]:
        s = math.exp(10.0 * math.tanh(math.log(s) / 10.0))  # the soft-clamped scale: 0.1 -> 0.104
        part = x[(x > lo) & (x < hi)]
        assert abs(len(part) / 20000 - w) < 0.02
        assert abs(float(part.mean()) - m) < 5 * s / math.sqrt(len(part))
        assert abs(float(part.std()) / s - 1) < 0.05


def test_sampling_without_context_works():
    # nflows' MADEMoG crashes here.
    est = GaussianMixtureMADE(4, [8], num_components=5)
    x = est.sample((3,))
    assert x.shape == (3, 4) and torch.isfinite(x).all()


def test_extreme_mixing_logits_stay_finite():
    est = GaussianMixtureMADE(2, [8], num_components=4).to(dtype=torch.float32)
    with torch.no_grad():
        est.made.output_layer.bias[-8:].mul_(0).add_(torch.linspace(-500, 500, 8))
    x = torch.randn(5, 2, dtype=torch.float32)
    lp = est.log_prob(x)
    assert torch.isfinite(lp).all()
    assert torch.isfinite(est.sample((100,))).all()
