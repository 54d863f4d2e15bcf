"""The bundled digits: fixed seeded splits, binarization, dequantized logit space."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from sklearn.datasets import load_digits as sklearn_digits  # noqa: E402

from madeflow.data import DigitSplits, load_digits, logit_log_jacobian  # noqa: E402


@pytest.fixture(scope="module")
def raw():
    bunch = sklearn_digits()
    return bunch.data.astype(np.float64), bunch.target


def test_split_sizes_and_seeded_permutation(raw):
    pixels, labels = raw
    data = load_digits("binary", seed=3)
    assert isinstance(data, DigitSplits)
    assert [len(t) for t in data] == [1258, 180, 359, 1258, 180, 359]
    perm = np.random.default_rng(3).permutation(1797)
    order = np.concatenate([perm[539:], perm[359:539], perm[:359]])
    images = torch.cat([data.train, data.val, data.test])
    ys = torch.cat([data.train_y, data.val_y, data.test_y])
    torch.testing.assert_close(images, torch.as_tensor(pixels[order] > 8, dtype=torch.float32))
    torch.testing.assert_close(ys, torch.as_tensor(labels[order]))
    assert data.train_y.dtype == torch.int64


def test_logit_data_dequantize_the_pixels(raw):
    pixels, _ = raw
    alpha = 0.05
    data = load_digits("logit", seed=0, alpha=alpha, dtype=torch.float64)
    perm = np.random.default_rng(0).permutation(1797)
    x = (torch.sigmoid(data.test) - alpha) / (1 - 2 * alpha)  # back to [0, 1]
    assert (x > 0).all() and (x < 1).all()
    torch.testing.assert_close(
        torch.floor(17 * x), torch.as_tensor(pixels[perm[:359]]), rtol=0, atol=0
    )
    # The dequantization noise is fixed by the seed and changes with it.
    torch.testing.assert_close(load_digits("logit", seed=0, dtype=torch.float64).test, data.test)
    assert not torch.allclose(
        load_digits("logit", seed=1, dtype=torch.float64).test[:5], data.test[:5]
    )
    assert data.train.dtype == torch.float64
    assert load_digits("logit").train.dtype == torch.float32


def test_logit_log_jacobian_matches_autograd():
    alpha = 0.1
    x = torch.rand(3, 64)
    jac = torch.autograd.functional.jacobian(
        lambda v: torch.logit(alpha + (1 - 2 * alpha) * v), x[0]
    )
    y = torch.logit(alpha + (1 - 2 * alpha) * x)
    expected = torch.diagonal(jac).abs().log().sum()
    got = logit_log_jacobian(y, alpha)
    assert got.shape == (3,)
    torch.testing.assert_close(got[0], expected)


def test_change_of_variables_normalizes_in_pixel_space():
    # A standard normal in logit space, moved to [0, 1] with the Jacobian, integrates to 1.
    alpha = 0.05
    x = torch.linspace(0, 1, 200001)[1:-1]
    y = torch.logit(alpha + (1 - 2 * alpha) * x).unsqueeze(-1)
    log_px = torch.distributions.Normal(0.0, 1.0).log_prob(y[:, 0]) + logit_log_jacobian(y, alpha)
    total = torch.trapezoid(log_px.exp(), x)
    # The normal's mass beyond logit(alpha) and logit(1 - alpha) is not in [0, 1].
    inside = torch.distributions.Normal(0.0, 1.0).cdf(torch.logit(torch.tensor(1 - alpha)))
    torch.testing.assert_close(total, 2 * inside - 1, rtol=1e-4, atol=0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="kind"):
        load_digits("gray")
    with pytest.raises(ValueError, match="alpha"):
        load_digits("logit", alpha=0.5)


def test_missing_sklearn_gives_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="scikit-learn"):
        load_digits("binary")
