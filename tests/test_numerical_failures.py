"""Numerical failures and awkward inputs through the Python API.

Training that diverges (a huge learning rate) ends with :class:`madeflow.NonFiniteLossError` and
advice, never with a distribution's support error or a message blaming the data; finite inputs
near float32's limits give a :class:`madeflow.NumericalError` naming the rows; ``fit`` never
hands batch norm a one-row mini-batch; half-precision models sample; NumPy arrays and lists get a
``TypeError`` saying how to convert them. :data:`API_CASES` is the table of refusals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import madeflow as mf
from madeflow.train.evaluation import NumericalError

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class ApiCase:
    """A call that must raise ``expect`` with a message matching ``pattern`` (and not more)."""

    call: Callable[[], object]
    expect: type[Exception]
    pattern: str


def _data(n: int = 120, d: int = 2, scale: float = 3.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return scale * torch.randn(n, d, generator=gen, dtype=torch.float32)


def _fit(model: torch.nn.Module, **kw) -> mf.History:
    x = _data()
    args = {"max_epochs": 3, "batch_size": 20, "progress": False, **kw}
    return mf.fit(model.float(), x[:100], x[100:], **args)


def _maf() -> mf.MAF:
    return mf.MAF(2, 2, [8])


def _maf_mog() -> mf.MAF:
    return mf.MAF(2, 2, [8], base="mog", num_components=2)


def _iaf() -> mf.IAF:
    return mf.IAF(2, 2, [8])


def _nan_weights() -> mf.MAF:
    model = _maf().float()
    with torch.no_grad():
        model.transforms[1].nn.output_layer.bias.fill_(float("nan"))
    return model


def _huge_rows() -> torch.Tensor:
    x = torch.zeros(4, 2, dtype=torch.float32)
    x[1] = torch.tensor([3e38, -3e38])
    x[3] = torch.tensor([-3.3e38, 3.3e38])
    return x


class _Overflowing(torch.nn.Module):
    """A density whose intermediate ``exp(x) - exp(x)`` is NaN once ``exp`` overflows float32."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2, dtype=torch.float32))

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        u = self.w * (torch.exp(x.abs()) - torch.exp(x.abs()))  # 0, or inf - inf = NaN
        return torch.distributions.Normal(0.0, 1.0, validate_args=True).log_prob(u).sum(-1)


DIVERGED = r"diverged at epoch \d+, step \d+.*NaN or Inf on finite data; try a lower learning rate"

API_CASES: dict[str, ApiCase] = {
    # divergence: was torch's "Expected value argument ... within the support" with a tensor dump
    "diverge-maf": ApiCase(lambda: _fit(_maf(), lr=1e10), mf.NonFiniteLossError, DIVERGED),
    # was "x contains NaN or Inf", blaming the data for the model's overflow
    "diverge-maf-mog": ApiCase(lambda: _fit(_maf_mog(), lr=1e10), mf.NonFiniteLossError, DIVERGED),
    "diverge-iaf": ApiCase(lambda: _fit(_iaf(), lr=1e10), mf.NonFiniteLossError, DIVERGED),
    "diverge-made": ApiCase(
        lambda: _fit(mf.GaussianMADE(2, [8]), lr=1e10),
        mf.NonFiniteLossError,
        r"diverged at epoch 1, step \d+( \(loss (inf|nan)\))?: the model's values became NaN or "
        r"Inf on finite data; "
        r"try a lower learning rate",
    ),
    "lr-inf": ApiCase(
        lambda: _fit(_maf(), lr=float("inf")),
        ValueError,
        r"lr must be a finite number > 0, got inf",
    ),
    "lr-nan": ApiCase(lambda: _fit(_maf(), lr=float("nan")), ValueError, r"lr must be a finite"),
    "lr-zero": ApiCase(lambda: _fit(_maf(), lr=0), ValueError, r"lr must be a finite number > 0"),
    "lr-negative": ApiCase(lambda: _fit(_maf(), lr=-1e-3), ValueError, r"lr must be .* > 0"),
    "weight-decay-nan": ApiCase(
        lambda: _fit(_maf(), weight_decay=float("nan")), ValueError, r"weight_decay must be .*>= 0"
    ),
    "clip-inf": ApiCase(
        lambda: _fit(_maf(), clip_grad_norm=float("inf")), ValueError, r"clip_grad_norm must be"
    ),
    "clip-zero": ApiCase(
        lambda: _fit(_maf(), clip_grad_norm=0.0), ValueError, r"clip_grad_norm must be .* > 0"
    ),
    # NaN in the data is still the data's fault, named as before
    "nan-data-still-blamed": ApiCase(
        lambda: mf.fit(_maf().float(), _data().index_fill(0, torch.tensor([7]), float("nan"))),
        ValueError,
        r"x contains NaN or Inf in 1 row\(s\) \(batch indices \d+\)$",
    ),
    # finite inputs near float32's limits: was the support error with a tensor dump
    "huge-finite-inputs": ApiCase(
        lambda: mf.evaluate_log_prob(_Overflowing(), _huge_rows()),
        NumericalError,
        r"NaN or Inf on finite data \(rows \[1, 3\]; largest \|x\| 3\.3e\+38\).*float64",
    ),
    "float16-training": ApiCase(
        lambda: mf.fit(_maf().half(), _data().half(), progress=False),
        ValueError,
        r"cannot train float16 parameters \(transforms\.0\.nn\.layers\.0\.weight\).*\.float",
    ),
    "nan-weights-evaluate": ApiCase(
        lambda: mf.evaluate_log_prob(_nan_weights(), _data(5)),
        NumericalError,
        r"parameter transforms\.1\.nn\.output_layer\.bias holds NaN or Inf, so it cannot score",
    ),
    # NumPy arrays and lists: was AttributeError: 'numpy.ndarray' object has no attribute ...
    "numpy-fit": ApiCase(
        lambda: mf.fit(_maf(), np.zeros((10, 2))), TypeError, r"train must be a torch\.Tensor.*"
    ),
    "list-fit": ApiCase(
        lambda: mf.fit(_maf(), [[0.0, 1.0]] * 10), TypeError, r"got list; convert it with torch"
    ),
    "numpy-val": ApiCase(
        lambda: mf.fit(_maf(), _data(), np.zeros((5, 2))), TypeError, r"val must be a torch\.Tensor"
    ),
    "numpy-evaluate": ApiCase(
        lambda: mf.evaluate_log_prob(_maf(), np.zeros((3, 2))),
        TypeError,
        r"data must be a torch\.Tensor .*got ndarray",
    ),
    "numpy-context-made-density": ApiCase(
        lambda: mf.GaussianMADE(2, [8], context_dim=1).log_prob(
            torch.zeros(3, 2), np.zeros((3, 1))
        ),
        TypeError,
        r"context must be a torch\.Tensor, got ndarray; convert it with torch\.as_tensor",
    ),
    "numpy-context-made": ApiCase(
        lambda: mf.MADE(2, [8], context_dim=1)(torch.zeros(3, 2), np.zeros((3, 1))),
        TypeError,
        r"context must be a torch\.Tensor, got ndarray",
    ),
    "numpy-x-made-density": ApiCase(
        lambda: mf.BernoulliMADE(2, [8]).log_prob(np.zeros((3, 2))),
        TypeError,
        r"x must be a torch\.Tensor, got ndarray; convert it",
    ),
    "numpy-context-sample": ApiCase(
        lambda: mf.BernoulliMADE(2, [8], context_dim=1).sample((), np.zeros((3, 1))),
        TypeError,
        r"context must be a torch\.Tensor",
    ),
}


@pytest.mark.parametrize("name", list(API_CASES))
def test_api_case_gives_one_clear_error(name):
    case = API_CASES[name]
    with pytest.raises(case.expect, match=case.pattern) as info:
        case.call()
    assert "\n" not in str(info.value)
    assert "Expected value argument" not in str(info.value)


def test_divergence_never_surfaces_as_a_support_error_in_any_epoch():
    """Across seeds and learning rates, a diverging flow always ends with the numerical error."""
    for seed in range(3):
        for lr in (1e4, 1e8, 1e12):
            torch.manual_seed(seed)
            try:
                _fit(_maf_mog(), lr=lr, max_epochs=2)
            except mf.NonFiniteLossError:
                pass


def test_parameters_that_become_nan_in_the_last_step_are_caught_without_validation():
    """Without validation data nothing scores the final weights: fit checks them each epoch."""
    model = mf.GaussianMADE(2, [8]).float()
    steps = []

    def poison_last_step(optimizer, args, kwargs):
        steps.append(1)
        if len(steps) == 5:  # 120 rows in batches of 24: the epoch's last step
            with torch.no_grad():
                model.made.output_layer.weight[0, 0] = float("nan")

    handle = register_optimizer_step_post_hook(poison_last_step)
    try:
        with pytest.raises(mf.NonFiniteLossError, match=r"parameter made\.output_layer\.weight"):
            mf.fit(model, _data(), None, max_epochs=1, batch_size=24, progress=False)
    finally:
        handle.remove()
    assert len(steps) == 5


@pytest.mark.parametrize("make", [_maf, _maf_mog, _iaf])
def test_flows_on_finite_inputs_near_float32_limits_never_raise_a_support_error(make):
    """Either a log-density (``-inf`` is right at ``3e38``) or the NumericalError naming rows."""
    for seed in range(4):
        torch.manual_seed(seed)
        try:
            ll = mf.evaluate_log_prob(make().float(), _huge_rows())
        except NumericalError as err:
            assert "rows [" in str(err)
        else:
            assert ll.shape == (4,) and not torch.isnan(ll).any()


@pytest.mark.parametrize("n", [101, 102, 103])
def test_fit_never_gives_batch_norm_a_one_row_batch(n):
    """101 rows in batches of 50 used to leave a 1-row last batch that batch norm refused."""
    model = mf.MAF(2, 3, [8], batch_norm=True).float()
    sizes = []
    real = model.log_prob

    def spy(x, context=None):
        sizes.append(x.shape[0])
        return real(x, context)

    model.log_prob = spy
    x = _data(n + 20)
    mf.fit(model, x[:n], x[n:], max_epochs=2, batch_size=50, progress=False)
    train_sizes = [s for s in sizes if s != 20]  # the validation passes score 20 rows
    assert min(train_sizes) >= 2 and sum(train_sizes) == 2 * n


def test_the_one_row_merge_changes_nothing_else():
    """With n % batch_size != 1 the batches are those of plain slicing (same weights as before)."""
    x = _data(125)
    sizes = []
    model = mf.GaussianMADE(2, [8]).float()
    real = model.log_prob
    model.log_prob = lambda x, context=None: (sizes.append(x.shape[0]), real(x, context))[1]
    mf.fit(model, x[:100], None, max_epochs=1, batch_size=30, progress=False)
    assert sizes == [30, 30, 30, 10]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("make", [lambda: mf.GaussianMixtureMADE(3, [8], 2), _maf_mog])
def test_half_precision_mixtures_sample(dtype, make):
    """Was: NotImplementedError "ndtri_cpu" not implemented for 'Half', deep inside torch."""
    model = make().to(dtype)
    x = model.sample((500,))
    assert x.dtype == dtype and x.shape[0] == 500 and torch.isfinite(x).all()
    assert x.float().std() > 0.1  # real draws, not a constant


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize(
    "make",
    [
        lambda: mf.GaussianMixtureMADE(3, [8], 2),
        lambda: mf.MAF(3, 2, [8]),
        lambda: mf.IAF(3, 2, [8]),
    ],
)
def test_other_float_inputs_into_a_float32_model_are_converted(dtype, make):
    model = make().float()
    x = torch.randn(5, 3).to(dtype)
    expected = model.log_prob(x.float())
    torch.testing.assert_close(model.log_prob(x), expected)
    assert model.log_prob(x).dtype == torch.float32


def test_bfloat16_models_train_and_score():
    model = mf.MAF(2, 2, [8]).to(torch.bfloat16)
    x = _data().to(torch.bfloat16)
    hist = mf.fit(model, x[:100], x[100:], max_epochs=2, progress=False)
    assert all(np.isfinite(hist.val_log_lik))
    assert mf.evaluate_log_prob(model, x).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "build",
    [
        lambda: mf.MAF(2, 2, [8], seed=0),
        lambda: mf.MAF(2, 2, [8], base="mog", num_components=2, seed=0),
        lambda: mf.IAF(2, 2, [8], seed=0),
    ],
    ids=["maf", "maf-mog", "iaf"],
)
def test_direct_log_prob_near_float32_limits_is_a_numerical_error(build):
    # Finite data the model's float32 values overflow on: never a support error, never
    # "x contains NaN" blaming the data for the model's internal overflow.
    model = build().float()
    x = torch.tensor([[0.1, 0.2], [3.3e38, -3.3e38], [0.3, -0.1]], dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 3.0)
    with pytest.raises(mf.NumericalError, match=r"1 row\(s\) \(flat batch indices 1;.*float64"):
        model.log_prob(x)
    assert torch.isfinite(model.log_prob(x[[0, 2]])).all()  # the other rows score fine
