import pytest
import torch

from madeflow.data.rows import RowSource, RowSubset, num_columns, subset, take, to_device
from madeflow.distributions import GaussianMADE
from madeflow.train.loop import evaluate_log_prob, fit


class ListRows:
    """A minimal row source (no ``subset``, no ``shape``) that records what it was asked for."""

    def __init__(self, data: torch.Tensor) -> None:
        self.rows = list(data)
        self.asked = 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        self.asked = max(self.asked, len(index))
        if not len(index):
            return torch.empty(0, len(self.rows[0]))
        return torch.stack([self.rows[i] for i in index.tolist()])


def test_a_class_with_len_and_getitem_is_a_row_source():
    assert isinstance(ListRows(torch.zeros(3, 2)), RowSource)
    assert isinstance(torch.zeros(3, 2), RowSource)  # tensors too


def test_take_subset_and_columns_agree_for_tensors_and_row_sources():
    x = torch.arange(12.0).reshape(6, 2)
    src = ListRows(x)
    idx = torch.tensor([4, 0, 4])
    assert torch.equal(take(src, idx), x[idx])
    assert torch.equal(take(x, idx), x[idx])
    part = subset(src, torch.tensor([5, 1, 3]))
    assert isinstance(part, RowSubset) and len(part) == 3
    assert torch.equal(take(part, torch.tensor([2, 0])), x[[3, 5]])
    assert torch.equal(subset(x, torch.tensor([5, 1])), x[[5, 1]])
    assert num_columns(src) == num_columns(x) == num_columns(part) == 2
    assert to_device(src, "cpu") is src and to_device(None, "cpu") is None


def test_fit_on_a_row_source_reads_batches_and_equals_fit_on_the_tensor():
    data = torch.randn(90, 3)
    runs = []
    for train, val in ((data[:70], data[70:]), (ListRows(data[:70]), ListRows(data[70:]))):
        torch.manual_seed(0)
        model = GaussianMADE(3, [8], seed=0)
        hist = fit(model, train, val, max_epochs=3, batch_size=16, seed=2, progress=False)
        runs.append((model.state_dict(), hist.val_log_lik))
        if isinstance(train, ListRows):
            assert train.asked == 16  # a mini-batch at a time, never the whole set
    (a, va), (b, vb) = runs
    assert va == vb
    for k in a:
        assert torch.equal(a[k], b[k]), k
    scores = evaluate_log_prob(model, ListRows(data[70:]), batch_size=7)
    assert torch.equal(scores, evaluate_log_prob(model, data[70:], batch_size=7))


def test_fit_rejects_what_is_not_rows():
    model = GaussianMADE(2, [8], seed=0)
    with pytest.raises(TypeError, match=r"train must be a torch\.Tensor .*got list; convert"):
        fit(model, [[0.0, 1.0]], max_epochs=1)
    with pytest.raises(ValueError, match=r"got \(0,\)"):
        fit(model, ListRows(torch.zeros(0, 2)), max_epochs=1)
    with pytest.raises(ValueError, match=r"val must be a non-empty \(M, 2\) tensor, got \(4, 3\)"):
        fit(model, ListRows(torch.zeros(5, 2)), ListRows(torch.zeros(4, 3)), max_epochs=1)
