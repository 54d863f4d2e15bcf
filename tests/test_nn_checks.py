import pytest
import torch
from pyro.nn import AutoRegressiveNN

from madeflow import MADE, AutoregressiveError, check_autoregressive


def test_accepts_pyro_conditioner():
    arn = AutoRegressiveNN(4, [20], param_dims=[1, 1]).double()
    dep = check_autoregressive(arn, 4)
    assert dep.shape == (4, 4)
    assert not bool(dep.diagonal().any())


def test_detects_a_dense_network():
    net = torch.nn.Linear(3, 3)
    with pytest.raises(AutoregressiveError, match="output 0 <- input 0"):
        check_autoregressive(net, 3)


def test_detects_the_wrong_ordering():
    made = MADE(4, [16], permutation=[3, 2, 1, 0])
    check_autoregressive(made, 4)  # its own ordering: fine
    with pytest.raises(AutoregressiveError, match="not autoregressive"):
        check_autoregressive(made, 4, permutation=[0, 1, 2, 3])


def test_detects_a_single_leaking_weight():
    made = MADE(5, [20])
    with torch.no_grad():
        made.output_layer.mask[2, :] = True  # output of input 2 now sees every hidden unit
    with pytest.raises(AutoregressiveError, match="output 2 <- input 2"):
        check_autoregressive(made, 5)


def test_passes_context_as_keyword():
    made = MADE(3, [12], context_dim=2)
    dep = check_autoregressive(made, 3, context=torch.randn(2))
    assert dep.sum() > 0
