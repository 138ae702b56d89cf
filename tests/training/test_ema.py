"""EMA of weights: the average, its warm-up, and its state round trip."""

import torch
from torch import nn

from pipeline.training.ema import EMA


def test_ema_averages_with_warmup_then_the_configured_decay():
    model = nn.Linear(2, 1, bias=False)
    nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.9)
    assert ema.decay_at(0) == 0.1 and ema.decay_at(1000) == 0.9
    expected = torch.zeros(1, 2)
    for step in range(30):
        with torch.no_grad():
            model.weight.fill_(float(step + 1))
        ema.update(model, step)
        decay = min(0.9, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * model.weight.detach()
    assert torch.allclose(ema.shadow["weight"], expected)

    plain = EMA(nn.Linear(2, 1, bias=False), decay=0.9, warmup=False)
    assert plain.decay_at(0) == 0.9


def test_ema_state_round_trip_and_copy_to():
    model = nn.Linear(3, 2)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=100)
    other = EMA(nn.Linear(3, 2), decay=0.5)
    other.load_state_dict(ema.state_dict())
    target = nn.Linear(3, 2)
    other.copy_to(target)
    assert torch.equal(target.weight, ema.shadow["weight"])
