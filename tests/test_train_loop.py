import math
import sys

import pytest
import torch
from torch import nn

from madeflow.data.toy import toy_data
from madeflow.distributions import GaussianMADE
from madeflow.runs.safe_io import load_tensors, save_tensors
from madeflow.train.loop import NonFiniteLossError, evaluate_log_prob, fit
from madeflow.train.state import upgrade

pytestmark = pytest.mark.usefixtures("one_thread")


class DiagGauss(nn.Module):
    """Stand-in density: independent Gaussians with learnable loc and log-scale."""

    def __init__(self, dim: int = 2, loc: float = 0.0) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.full((dim,), loc))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def log_prob(self, x, context=None):
        if context is not None:
            x = x - context
        return torch.distributions.Normal(self.loc, self.log_scale.exp()).log_prob(x).sum(-1)


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_fit_improves_log_likelihood_on_toy_density(device):
    data = toy_data("moons", 400, seed=1, dtype=torch.float64).to(device)
    model = GaussianMADE(2, [32]).to(device)
    before = evaluate_log_prob(model, data[300:]).mean().item()
    hist = fit(model, data[:300], data[300:], max_epochs=15, batch_size=20, lr=3e-3, progress=False)
    after = evaluate_log_prob(model, data[300:]).mean().item()
    assert after > before + 0.5
    assert len(hist.train_log_lik) == len(hist.val_log_lik) == hist.epochs == 15
    assert hist.train_log_lik[-1] > hist.train_log_lik[0]
    assert hist.best_val_log_lik == pytest.approx(after, abs=1e-9)


def test_same_seed_gives_bitwise_same_parameters():
    data = toy_data("8gaussians", 300, seed=0, dtype=torch.float64)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = GaussianMADE(2, [16], num_masks=2, permutation="random", seed=1)
        fit(model, data[:250], data[250:], max_epochs=3, batch_size=32, seed=5, progress=False)
        runs.append(_params(model))
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    torch.manual_seed(3)
    model = GaussianMADE(2, [16], num_masks=2, permutation="random", seed=1)
    fit(model, data[:250], data[250:], max_epochs=3, batch_size=32, seed=6, progress=False)
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], _params(model)))


def test_early_stopping_restores_best_weights():
    # Train data sits at +4, validation at +1: moving loc from 0 towards 4 first helps then
    # hurts the validation likelihood, so early stopping must fire and roll back.
    train = torch.randn(400, 2) * 0.5 + 4.0
    val = torch.randn(100, 2) * 0.5 + 1.0
    model = DiagGauss()
    snapshots = []
    hist = fit(
        model,
        train,
        val,
        max_epochs=200,
        lr=0.05,
        patience=3,
        progress=False,
        callback=lambda ev: snapshots.append(_params(model)),
    )
    assert hist.stopped == "early_stopping"
    assert hist.epochs == hist.best_epoch + 3  # both counted from 1
    assert hist.best_val_log_lik == max(hist.val_log_lik)
    assert hist.val_log_lik[hist.best_epoch - 1] == hist.best_val_log_lik
    best = snapshots[hist.best_epoch - 1]
    assert all(torch.equal(a, b) for a, b in zip(best, _params(model)))
    assert not all(torch.equal(a, b) for a, b in zip(snapshots[-1], _params(model)))


def test_resume_equals_uninterrupted_run(tmp_path):
    data = toy_data("rings", 300, seed=2, dtype=torch.float64)
    train, val = data[:240], data[240:]

    def make():
        return GaussianMADE(2, [16], num_masks=3, permutation="random", seed=7)

    def jitter(x, gen):
        return x + 0.01 * torch.randn(x.shape, generator=gen, dtype=x.dtype)

    kw = dict(max_epochs=5, batch_size=50, lr=1e-2, patience=2, progress=False, seed=3)
    kw["augment"] = jitter
    full = make()
    states = []
    hist_full = fit(full, train, val, callback=lambda ev: states.append(ev.state()), **kw)
    # Interrupted after epoch 2: save that state to disk as the CLI does, reload safely.
    save_tensors({"state": states[1]}, tmp_path / "state.pt")
    state = load_tensors(tmp_path / "state.pt")["state"]
    resumed = make()
    with torch.no_grad():
        for p in resumed.parameters():
            p.add_(1.0)  # the state must overwrite everything
    hist_resumed = fit(resumed, train, val, state=state, **kw)
    assert all(torch.equal(a, b) for a, b in zip(_params(full), _params(resumed)))
    assert hist_resumed.train_log_lik == hist_full.train_log_lik
    assert hist_resumed.val_log_lik == hist_full.val_log_lik
    assert (hist_resumed.best_epoch, hist_resumed.stopped) == (
        hist_full.best_epoch,
        hist_full.stopped,
    )


def test_nan_loss_raises_clear_error():
    class Broken(DiagGauss):
        def log_prob(self, x, context=None):
            return super().log_prob(x) + torch.log(self.loc[0] - 0.5)  # NaN once loc < 0.5

    with pytest.raises(NonFiniteLossError, match="epoch 1, step 1"):
        fit(Broken(), torch.randn(50, 2), max_epochs=2, progress=False)


def test_nonfinite_validation_raises():
    val = torch.full((5, 2), 1e200)  # finite data, -inf log-likelihood
    with pytest.raises(NonFiniteLossError, match="validation"):
        fit(DiagGauss(), torch.randn(50, 2), val, max_epochs=1, progress=False)


def test_masks_cycle_once_per_step():
    model = GaussianMADE(3, [12], num_masks=4, permutation="random", seed=0)
    fit(model, torch.randn(70, 3), max_epochs=2, batch_size=20, progress=False)
    assert int(model.made.mask_index) == (2 * 4) % 4  # 4 steps per epoch
    fit(model, torch.randn(50, 3), max_epochs=1, batch_size=20, progress=False)
    assert int(model.made.mask_index) == 3


def test_context_callback_stop_and_schedule():
    ctx = torch.randn(80, 2)
    x = ctx + 3.0 + 0.1 * torch.randn(80, 2)
    model = DiagGauss()
    hist = fit(
        model,
        x[:60],
        x[60:],
        train_context=ctx[:60],
        val_context=ctx[60:],
        max_epochs=50,
        lr=0.1,
        lr_schedule="cosine",
        clip_grad_norm=1.0,
        progress=False,
        callback=lambda ev: ev.epoch == 3,
    )
    assert hist.stopped == "callback" and hist.epochs == 3
    assert model.loc.detach().mean() > 0.1  # learned the offset direction


def test_no_validation_keeps_final_weights():
    model = DiagGauss()
    seen = []
    hist = fit(
        model,
        torch.randn(40, 2) + 2,
        max_epochs=3,
        progress=False,
        callback=lambda ev: seen.append(_params(model)),
    )
    assert hist.val_log_lik == [] and math.isnan(hist.best_val_log_lik)
    assert all(torch.equal(a, b) for a, b in zip(seen[-1], _params(model)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(train=torch.zeros(0, 2)), "train"),
        (dict(val=torch.zeros(3, 5)), "val"),
        (dict(lr_schedule="step"), "lr_schedule"),
        (dict(batch_size=0), "batch_size"),
        (dict(train_context=torch.zeros(3, 1)), "train_context"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = dict(train=torch.randn(10, 2), val=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        fit(DiagGauss(), args.pop("train"), args.pop("val"), progress=False, **args)


def test_progress_bar_shows_log_likelihoods(capsys):
    fit(DiagGauss(), torch.randn(30, 2), torch.randn(10, 2), max_epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "2/2" in err and "train=" in err and "val=" in err


def test_progress_bar_ends_full_when_training_stops_early(capsys):
    # Validation far from the training data: early stopping after a few of 200 epochs.
    train, val = torch.randn(40, 2) * 0.5 + 4.0, torch.randn(10, 2) * 0.5 + 1.0
    hist = fit(DiagGauss(), train, val, max_epochs=200, lr=0.05, patience=2, progress=True)
    assert hist.stopped == "early_stopping" and hist.epochs < 200
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert f"{hist.epochs}/{hist.epochs}" in last and "100%" in last


def test_progress_none_needs_no_tqdm(monkeypatch):
    """Without tqdm (the light core) the default shows no bar; asking for one says what to do."""
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    hist = fit(DiagGauss(), torch.randn(30, 2), max_epochs=1, progress=None)
    assert hist.epochs == 1
    with pytest.raises(ImportError, match=r'pip install "madeflow\[cli\]"'):
        fit(DiagGauss(), torch.randn(30, 2), max_epochs=1, progress=True)


def test_a_version_1_state_resumes_with_epochs_counted_from_1():
    """States saved before epochs were counted from 1 resume where they stopped."""
    data = torch.randn(60, 2) + 1.0
    kw = dict(max_epochs=4, batch_size=20, lr=0.05, patience=None, progress=False)
    states = []
    full = fit(DiagGauss(), data[:40], data[40:], callback=lambda e: states.append(e.state()), **kw)
    old = dict(states[1], version=1, epoch=1)  # after 2 epochs, as version 1 wrote it
    old["history"] = dict(old["history"], best_epoch=old["history"]["best_epoch"] - 1)
    assert upgrade(old)["epoch"] == states[1]["epoch"] == 2
    assert upgrade(old)["history"] == states[1]["history"]
    resumed = fit(DiagGauss(), data[:40], data[40:], state=old, **kw)
    assert resumed.train_log_lik == full.train_log_lik and resumed.best_epoch == full.best_epoch


def test_evaluate_log_prob_no_grad_and_mask_ensemble():
    from madeflow import BernoulliMADE

    model = BernoulliMADE(4, [12], num_masks=3, permutation="random", seed=0)
    x = torch.bernoulli(torch.full((7, 4), 0.5))
    got = evaluate_log_prob(model, x, batch_size=3)
    assert not got.requires_grad
    assert torch.allclose(got, model.ensemble_log_prob(x))
    assert not torch.allclose(got, model.log_prob(x))


def test_compile_option_trains_the_same_parameters(monkeypatch):
    from madeflow import MAF

    compiled = []
    real = torch.compile

    def recording(fn, **kwargs):  # aot_eager: the compiled graphs without inductor's build time
        compiled.append(fn)
        return real(fn, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch, "compile", recording)
    data = toy_data("moons", 200, seed=1, dtype=torch.float64)
    runs = []
    for use_compile in (False, True):
        torch.manual_seed(0)
        model = MAF(2, num_transforms=2, hidden_dims=[16], seed=0)
        fit(
            model,
            data[:150],
            data[150:],
            max_epochs=2,
            batch_size=32,
            progress=False,
            compile=use_compile,
        )
        runs.append(_params(model))
    assert len(compiled) == 1
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
