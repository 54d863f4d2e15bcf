"""PermuteTransform: a permutation saved in state_dict, validated, volume preserving."""

from __future__ import annotations

import pytest
import torch

from madeflow.transforms import PermuteTransform


def test_permutes_and_inverts():
    t = PermuteTransform(torch.tensor([2, 0, 1]))
    u = torch.randn(4, 3)
    x = t(u)
    assert torch.equal(x, u[..., [2, 0, 1]])
    assert torch.equal(t.inv(x.clone()), u)
    assert torch.equal(t.log_abs_det_jacobian(u, x), torch.zeros(4))


def test_permutation_is_saved_and_restored():
    a = PermuteTransform([2, 0, 1])
    b = PermuteTransform([0, 1, 2])
    assert "permutation" in a.state_dict()
    b.load_state_dict(a.state_dict())
    u = torch.randn(5, 3)
    assert torch.equal(b(u), a(u))
    assert torch.equal(b.inv(u.clone()), a.inv(u.clone()))
    assert b.permutation.device.type == torch.get_default_device().type


@pytest.mark.parametrize("bad", [[0, 0, 1], [0, 1, 3], [0.0, 1.0, 2.0]])
def test_invalid_permutations_are_rejected(bad):
    with pytest.raises(ValueError, match="permutation"):
        PermuteTransform(bad)
