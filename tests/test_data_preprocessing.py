"""DataSpace and Dequantize, and the library recipe that reproduces ``madeflow fit``."""

import json

import pytest
import torch

from madeflow import build_model, cli, evaluate_log_prob, fit
from madeflow.data import DataSpace, Dequantize, Standardizer, load_digits
from madeflow.runs.safe_io import load_tensors
from madeflow.train.evaluation import mean_and_stderr

pytestmark = pytest.mark.usefixtures("one_thread")


def test_digit_dequantization_keeps_pixel_levels():
    space = DataSpace("digits", None, 0.05)
    y = load_digits(dtype=torch.float64).train[:20]
    gen = torch.Generator().manual_seed(0)
    y2 = space.augmenter()(y, gen)
    x, x2 = space.to_data(y), space.to_data(y2)
    assert torch.equal(torch.floor(x * 17), torch.floor(x2 * 17))
    assert (x - x2).abs().max() > 0.01  # fresh noise
    assert DataSpace("toy", None, 0.05).augmenter() is None


def test_dequantize_is_the_augmenter_of_logit_digits():
    assert isinstance(DataSpace.logit(0.1).augmenter(), Dequantize)
    assert DataSpace.logit(0.1).augmenter().alpha == 0.1
    assert DataSpace("digits-binary").augmenter() is None
    y = load_digits(dtype=torch.float64).train[:4]
    a = Dequantize(0.05)(y, torch.Generator().manual_seed(3))
    b = DataSpace.logit().augmenter()(y, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == y.dtype and a.shape == y.shape


def test_standardized_space_round_trips_with_its_log_jacobian():
    x = torch.randn(50, 3, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1]) + 5.0
    space = DataSpace.standardized(Standardizer.fit(x), kind="toy")
    y = space.to_model(x)
    torch.testing.assert_close(space.to_data(y), x)
    expected = -space.standardizer.std.log().sum()
    torch.testing.assert_close(space.log_jacobian(y), expected.expand(50))
    again = DataSpace.from_state(space.state(), "toy")
    torch.testing.assert_close(again.to_model(x), y)
    assert DataSpace.from_state({}, "digits", 0.1) == DataSpace.logit(0.1)


def test_library_recipe_matches_the_command_line(tmp_path, monkeypatch):
    """The same data split, preprocessing, model and training give the CLI's numbers exactly."""
    monkeypatch.setattr("madeflow.cli.plots.plot_run", lambda *a, **k: [])
    out = tmp_path / "run"
    tiny = ["--hidden", "64", "--num-transforms", "2", "--num-components", "3"]
    assert cli.main(["fit", "digits", *tiny, "--epochs", "2", "--quiet", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    weights = load_tensors(out / "model.pt")["model"]

    torch.set_default_dtype(torch.float32)  # as madeflow fit trains
    data = load_digits("logit", seed=0, alpha=0.05)
    space = DataSpace.logit(alpha=0.05)
    model = build_model("maf-mog", 64, hidden_dims=[64], num_transforms=2, num_components=3)
    fit(
        model, data.train, data.val, max_epochs=2, batch_size=100, lr=1e-3, weight_decay=1e-6,
        patience=30, clip_grad_norm=10.0, seed=0, augment=space.augmenter(), progress=False,
    )  # fmt: skip
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    for split in ("val", "test"):
        ll = evaluate_log_prob(model, getattr(data, split))
        pixels = ll + space.log_jacobian(getattr(data, split))
        assert mean_and_stderr(ll) == (
            metrics[f"{split}_log_lik"],
            metrics[f"{split}_log_lik_stderr"],
        )
        assert mean_and_stderr(pixels) == (
            metrics[f"{split}_log_lik_data_space"],
            metrics[f"{split}_log_lik_data_space_stderr"],
        )
