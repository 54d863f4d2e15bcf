import json

import pytest
import torch

from madeflow.models import MODELS, build_model, model_config, model_from_config


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_builds_scores_and_round_trips_its_config(name):
    opts = dict(hidden_dims=[12], num_transforms=2, num_components=3, seed=4)
    config = json.loads(json.dumps(model_config(name, 3, **opts)))
    state = torch.get_rng_state()
    a, b = model_from_config(config), model_from_config(config)
    assert torch.equal(torch.get_rng_state(), state)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.randint(0, 2, (5, 3)).double()
    assert a.log_prob(x).shape == (5,)
    assert a.sample((4,)).shape == (4, 3)
    other = build_model(name, 3, **{**opts, "seed": 5}).state_dict()
    assert not all(torch.equal(sa[k], other[k]) for k in sa)


def test_num_masks_reaches_every_made():
    model = build_model("maf", 3, hidden_dims=[12], num_transforms=2, num_masks=3)
    mades = [m for m in model.modules() if hasattr(m, "next_mask")]
    assert len(mades) >= 2 and all(m.num_masks == 3 for m in mades)


def test_errors():
    with pytest.raises(ValueError, match="unknown model"):
        model_config("gan", 2)
    with pytest.raises(ValueError, match="unknown model option"):
        model_config("maf", 2, depth=3)
    with pytest.raises(ValueError, match="not a model config"):
        model_from_config({"name": "maf"})
