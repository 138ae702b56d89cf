"""Widening into the inpainting and instruction-editing variants, gradient checkpointing, bf16
autocast."""

import copy

import pytest
import torch

from pipeline.models import create_glide_model, widen_for_inpainting, widen_for_instruct
from pipeline.models.unet import ResBlock

B, S = 2, 16


def batch(seed=0, super_res=False):
    g = torch.Generator().manual_seed(seed)
    kw = dict(
        x=torch.randn(B, 3, S, S, generator=g),
        timesteps=torch.tensor([10, 600]),
        tokens=torch.randint(1, 64, (B, 8), generator=g),
        mask=torch.ones(B, 8, dtype=torch.bool),
    )
    if super_res:
        kw["low_res"] = torch.randn(B, 3, S // 2, S // 2, generator=g)
    return kw


def inpaint_inputs(seed=5):
    g = torch.Generator().manual_seed(seed)
    return dict(
        inpaint_image=torch.randn(B, 3, S, S, generator=g),
        inpaint_mask=(torch.rand(B, 1, S, S, generator=g) > 0.3).float(),
    )


@pytest.mark.parametrize("super_res", [False, True])
def test_widen_for_inpainting_starts_identical(tiny_config, perturb, super_res):
    base = perturb(create_glide_model(**tiny_config, super_res=super_res)).eval()
    wide = widen_for_inpainting(base)
    assert wide.inpaint and wide.super_res == super_res and not wide.training
    w_old, w_new = base.input_blocks[0][0].weight, wide.input_blocks[0][0].weight
    assert w_new.shape[1] == w_old.shape[1] + 4
    assert not w_new[:, 3:7].any()  # the new channels start at zero
    for key, value in base.state_dict().items():
        if key != "input_blocks.0.0.weight":
            assert torch.equal(wide.state_dict()[key], value), key
    kw = batch(super_res=super_res)
    with torch.no_grad():
        before = base(**kw)
        after = wide(**kw, **inpaint_inputs())
        assert before.abs().amax() > 1e-3
        # equal up to float summation order (the input conv has more, zero-weighted, channels)
        torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
        # the new channels are wired: once trained (non-zero) they change the output
        wide.input_blocks[0][0].weight[:, 3:7].normal_(std=0.1)
        assert not torch.allclose(wide(**kw, **inpaint_inputs()), before)
    with pytest.raises(ValueError, match="already"):
        widen_for_inpainting(wide)


@pytest.mark.parametrize("inpaint", [False, True])
def test_widen_for_instruct_starts_identical_and_reads_the_source_image(
    tiny_config, perturb, inpaint
):
    base = perturb(create_glide_model(**tiny_config, inpaint=inpaint)).eval()
    wide = widen_for_instruct(base)
    assert wide.instruct and wide.inpaint == inpaint
    new = slice(7, 10) if inpaint else slice(3, 6)  # after x_t and any inpainting inputs
    weight = wide.input_blocks[0][0].weight
    assert (
        weight.shape[1] == base.input_blocks[0][0].weight.shape[1] + 3 and not weight[:, new].any()
    )
    kw = {**batch(), **(inpaint_inputs() if inpaint else {})}
    source = torch.randn(B, 3, S, S, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        before = base(**kw)
        torch.testing.assert_close(wide(**kw, source_image=source), before, rtol=1e-4, atol=1e-5)
        weight[:, new].normal_(std=0.1)  # once trained, the source image changes the output
        assert not torch.allclose(wide(**kw, source_image=source), before)
        assert torch.equal(wide(**kw, source_image=source), wide(**kw, source_image=source))
    with pytest.raises(ValueError, match="needs source_image"):
        wide(**kw)
    with pytest.raises(ValueError, match="instruct=False"):
        base(**kw, source_image=source)
    with pytest.raises(ValueError, match="already"):
        widen_for_instruct(wide)


def _grads(model, kw, seed):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout masks in both runs
    out = model(**kw)
    (out**2).mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config, perturb):
    model = perturb(create_glide_model(**{**tiny_config, "dropout": 0.2})).train()
    ckpt = copy.deepcopy(model)
    ckpt.set_checkpointing(True)
    kw = batch()
    out_a, grads_a = _grads(model, kw, seed=3)

    calls = []
    block = next(m for m in ckpt.modules() if isinstance(m, ResBlock))
    block.in_layers.register_forward_hook(lambda *_: calls.append(1))
    out_b, grads_b = _grads(ckpt, kw, seed=3)
    assert len(calls) == 2  # forward + recomputation in backward: checkpointing is on

    torch.testing.assert_close(out_b, out_a, rtol=0, atol=0)
    assert grads_a.keys() == grads_b.keys()
    assert sum(g.abs().sum() for g in grads_a.values()) > 0
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-5, atol=1e-7, msg=name)


def test_checkpointing_flag_reaches_every_block(tiny_config):
    model = create_glide_model(**tiny_config, use_checkpoint=True)
    blocks = [m for m in model.modules() if hasattr(m, "use_checkpoint")]
    kinds = {type(m).__name__ for m in blocks}
    assert {"ResBlock", "AttentionBlock", "ResidualAttentionBlock"} <= kinds
    assert all(m.use_checkpoint for m in blocks)
    model.set_checkpointing(False)
    assert not any(m.use_checkpoint for m in blocks)


def test_bf16_autocast_forward_and_backward(tiny_config, perturb):
    model = perturb(create_glide_model(**tiny_config, super_res=True, inpaint=True), std=0.1)
    kw = {**batch(super_res=True), **inpaint_inputs()}
    with torch.no_grad():
        ref = model(**kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**kw)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    rel = (out.float() - ref).norm() / ref.norm()
    assert rel < 0.05, f"bf16 output too far from fp32: relative error {rel:.3f}"
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
