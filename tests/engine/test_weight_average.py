import pytest
import torch
from torch import nn

from sppnet.engine.weight_average import WeightAverage


def test_the_average_follows_the_recurrence_written_out():
    # A slow reference: each update's decay min(d, (1 + t) / (10 + t)) and the
    # average a <- decay * a + (1 - decay) * w, entry by entry in float64.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    average = WeightAverage(model, decay=0.8)
    expected = {k: v.double().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    for t in range(12):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(5, 3))  # moves the batch-norm statistics and its batch count
        average.update(model)
        decay = min(0.8, (1 + t) / (10 + t))
        for k in expected:
            expected[k] = decay * expected[k] + (1 - decay) * model.state_dict()[k].double()
    state = average.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(state[k].double(), v, rtol=1e-6, atol=1e-6)
    assert int(state["1.num_batches_tracked"]) == 12  # integers are copied, not averaged
    assert average.updates == 12
    assert not average.averaged.training


def test_the_average_is_a_copy_and_decays_outside_zero_one_are_refused():
    model = nn.Linear(2, 2)
    average = WeightAverage(model, decay=0.9)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(average.averaged.weight, model.weight)
    for decay in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="decay"):
            WeightAverage(model, decay)
