import pytest
import torch
from torch import nn

from pipeline.training.optim import build_optimizer, lightning_optimizers, lr_multiplier


def _settings(**overrides):
    base = dict(
        lr=1e-2,
        weight_decay=0.1,
        betas=(0.9, 0.99),
        warmup_steps=0,
        max_steps=10,
        schedule="constant",
    )
    return {**base, **overrides}


def test_warmup_is_linear_then_cosine_decays_to_zero():
    kw = dict(warmup_steps=4, max_steps=14, schedule="cosine")
    assert [lr_multiplier(s, **kw) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_multiplier(9, **kw) == pytest.approx(0.5)
    assert lr_multiplier(14, **kw) == pytest.approx(0.0, abs=1e-12)
    assert lr_multiplier(20, **kw) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_multiplier(5, warmup_steps=0, max_steps=10, schedule="linear")


def test_optimizer_is_fused_adamw_on_plain_cpu_parameters_and_matches_the_reference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.SiLU(), nn.Linear(5, 2))
    reference = nn.Sequential(nn.Linear(6, 5), nn.SiLU(), nn.Linear(5, 2))
    reference.load_state_dict(model.state_dict())
    initial = [p.detach().clone() for p in model.parameters()]
    groups = [
        {"params": list(model[0].parameters()), "lr": 1e-2},
        {"params": list(model[2].parameters()), "lr": 1e-3},
    ]
    optimizer, scheduler = build_optimizer(groups, **_settings())
    assert optimizer.defaults["fused"] is True
    expected = torch.optim.AdamW(
        [
            {"params": list(reference[0].parameters()), "lr": 1e-2},
            {"params": list(reference[2].parameters()), "lr": 1e-3},
        ],
        weight_decay=0.1,
        betas=(0.9, 0.99),
        foreach=False,
    )
    x, y = torch.randn(16, 6), torch.randn(16, 2)
    for _ in range(5):
        for net, opt in ((model, optimizer), (reference, expected)):
            opt.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            opt.step()
        scheduler.step()
    for got, want in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), initial, strict=True))


def test_optimizer_falls_back_to_the_default_adamw_for_parameters_the_fused_kernel_lacks():
    on_meta = nn.Parameter(torch.zeros(3, device="meta"))
    plain = nn.Parameter(torch.zeros(3))
    optimizer, _ = build_optimizer([plain, on_meta], **_settings())
    assert not optimizer.defaults["fused"]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_adamw_is_fused_in_every_precision(precision):
    """The modules clip gradients themselves, so mixed precision keeps the fused kernel."""
    train = dict(
        lr=1e-3, weight_decay=0.0, adam_betas=[0.9, 0.999], warmup_steps=0, max_steps=10,
        lr_schedule="constant", precision=precision, grad_clip=1.0,
    )  # fmt: skip
    params = [nn.Parameter(torch.zeros(3))]
    optimizer = lightning_optimizers([{"params": params}], train)["optimizer"]
    assert optimizer.defaults["fused"] is True
