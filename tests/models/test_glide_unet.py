"""Behaviour of the GLIDE UNet variants on tiny configurations."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.models import count_parameters, create_glide_model
from pipeline.text import empty_caption_tokens

B, S = 2, 16  # batch, image size of the tiny config


def inputs(seed=0, ctx=8, vocab=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 3, S, S, generator=g)
    t = torch.tensor([3, 917])
    tokens = torch.randint(1, vocab, (B, ctx), generator=g)
    mask = torch.ones(B, ctx, dtype=torch.bool)
    mask[1, 5:] = False
    return x, t, tokens, mask


def variant_kwargs(inpaint, super_res, seed=1):
    g = torch.Generator().manual_seed(seed)
    kw = {}
    if inpaint:
        kw["inpaint_image"] = torch.randn(B, 3, S, S, generator=g)
        kw["inpaint_mask"] = (torch.rand(B, 1, S, S, generator=g) > 0.5).float()
    if super_res:
        kw["low_res"] = torch.randn(B, 3, S // 2, S // 2, generator=g)
    return kw


VARIANTS = [(False, False), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize(("inpaint", "super_res"), VARIANTS)
def test_forward_shapes_and_zero_init(tiny_config, inpaint, super_res):
    model = create_glide_model(**tiny_config, inpaint=inpaint, super_res=super_res)
    assert model.input_blocks[0][0].in_channels == 3 + 4 * inpaint + 3 * super_res
    x, t, tokens, mask = inputs()
    out = model(x, t, tokens, mask, **variant_kwargs(inpaint, super_res))
    assert out.shape == (B, 6, S, S)
    assert not out.any()  # the output conv starts at zero, as ADM
    zero_layers = [model.out[2]]
    for m in model.modules():
        if hasattr(m, "out_layers"):
            zero_layers.append(m.out_layers[3])
        if hasattr(m, "proj_out"):
            zero_layers.append(m.proj_out)
    assert len(zero_layers) > 10 and all(not p.any() for m in zero_layers for p in m.parameters())


def test_input_channel_order(tiny_config):
    """[x_t, inpaint_image * mask, mask, bilinear(low_res)], the released order."""
    model = create_glide_model(**tiny_config, inpaint=True, super_res=True)
    seen = {}
    model.input_blocks[0][0].register_forward_pre_hook(lambda m, a: seen.setdefault("in", a[0]))
    x, t, tokens, mask = inputs()
    kw = variant_kwargs(True, True)
    model(x, t, tokens, mask, **kw)
    h = seen["in"]
    up = F.interpolate(kw["low_res"], size=(S, S), mode="bilinear", align_corners=False)
    assert torch.equal(h[:, :3], x)
    assert torch.equal(h[:, 3:6], kw["inpaint_image"] * kw["inpaint_mask"])
    assert torch.equal(h[:, 6:7], kw["inpaint_mask"])
    assert torch.equal(h[:, 7:], up)


def test_text_encoded_once_gives_identical_output(tiny_config, perturb):
    model = perturb(create_glide_model(**tiny_config)).eval()
    x, t, tokens, mask = inputs()
    enc = model.encode_text(tokens, mask)
    assert enc["xf_proj"].shape == (B, 4 * 32) and enc["xf_out"].shape == (B, 32, 8)
    # the projection to the timestep embedding reads the LAST position (GLIDE)
    torch.testing.assert_close(enc["xf_proj"], model.transformer_proj(enc["xf_out"][:, :, -1]))
    with torch.no_grad():
        assert torch.equal(model(x, t, tokens, mask), model(x, t, text_outputs=enc))


def test_model_uses_the_caption(tiny_config, perturb):
    model = perturb(create_glide_model(**tiny_config)).eval()
    x, t, tokens, mask = inputs()
    empty_tokens, empty_mask = empty_caption_tokens(8, batch_size=B)
    with torch.no_grad():
        cond = model(x, t, tokens, mask)
        uncond = model(x, t, empty_tokens, empty_mask)
        other = model(x, t, (tokens + 1) % 64, mask)
    assert (cond - uncond).abs().amax(dim=(1, 2, 3)).min() > 1e-4
    assert (cond - other).abs().amax(dim=(1, 2, 3)).min() > 1e-4
    # padded positions see the learned padding embedding: their token ids are ignored
    junk = tokens.clone()
    junk[~mask] = 7
    with torch.no_grad():
        assert torch.equal(model(x, t, junk, mask), cond)
    # ... and the padding embedding itself matters
    with torch.no_grad():
        model.padding_embedding.add_(1.0)
        assert not torch.allclose(model(x, t, empty_tokens, empty_mask), uncond)


def test_text_transformer_is_bidirectional(tiny_config, perturb):
    model = perturb(create_glide_model(**tiny_config)).eval()
    _, _, tokens, mask = inputs()
    changed = tokens.clone()
    changed[0, 7] = (changed[0, 7] + 1) % 64  # the last token
    with torch.no_grad():
        a, b = model.encode_text(tokens, mask)["xf_out"], model.encode_text(changed, mask)["xf_out"]
    assert not torch.allclose(a[0, :, 0], b[0, :, 0])  # the first position sees it
    assert torch.equal(a[1], b[1])


def test_text_arguments_are_checked(tiny_config):
    model = create_glide_model(**tiny_config)
    x, t, tokens, mask = inputs()
    with pytest.raises(ValueError, match="empty caption"):
        model(x, t)
    with pytest.raises(ValueError, match="not both"):
        model(x, t, tokens, mask, text_outputs=model.encode_text(tokens, mask))
    with pytest.raises(ValueError, match="text batch 1"):
        model(x, t, tokens[:1], mask[:1])
    with pytest.raises(ValueError, match=r"tokens must be \[B, 8\]"):
        model(x, t, tokens[:, :5], mask[:, :5])
    with pytest.raises(ValueError, match="mask"):
        model(x, t, tokens, None)


def test_super_res_consumes_low_res(tiny_config, perturb):
    model = perturb(create_glide_model(**tiny_config, super_res=True)).eval()
    x, t, tokens, mask = inputs()
    low_res = variant_kwargs(False, True)["low_res"]
    with torch.no_grad():
        a = model(x, t, tokens, mask, low_res=low_res)
        b = model(x, t, tokens, mask, low_res=low_res.flip(-1))
    assert (a - b).abs().amax(dim=(1, 2, 3)).min() > 1e-4
    with pytest.raises(ValueError, match="needs low_res"):
        model(x, t, tokens, mask)
    base = create_glide_model(**tiny_config)
    with pytest.raises(ValueError, match="super_res=False"):
        base(x, t, tokens, mask, low_res=low_res)
    with pytest.raises(ValueError, match="inpaint=False"):
        base(x, t, tokens, mask, **variant_kwargs(True, False))


def test_unconditional_model_without_text(tiny_config):
    model = create_glide_model(**{**tiny_config, "xf_width": 0})
    x, t, _, _ = inputs()
    assert model(x, t).shape == (B, 6, S, S)
    assert not any("transformer" in k or "encoder_kv" in k for k in model.state_dict())


def test_noise_cond_aug(tiny_config, perturb):
    plain = create_glide_model(**tiny_config, super_res=True)
    aug = create_glide_model(**tiny_config, super_res=True, noise_cond_aug=True)
    c = 32
    assert count_parameters(aug) - count_parameters(plain) == (c * 4 * c + 4 * c) + (
        16 * c * c + 4 * c
    )
    assert not any(k.startswith("aug_embed") for k in plain.state_dict())
    perturb(aug).eval()
    x, t, tokens, mask = inputs()
    low_res = variant_kwargs(False, True)["low_res"]
    with torch.no_grad():
        a = aug(x, t, tokens, mask, low_res=low_res, aug_level=torch.tensor([0, 0]))
        b = aug(x, t, tokens, mask, low_res=low_res, aug_level=torch.tensor([250, 250]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="aug_level"):
        aug(x, t, tokens, mask, low_res=low_res)
    with pytest.raises(ValueError, match="noise_cond_aug=False"):
        plain(x, t, tokens, mask, low_res=low_res, aug_level=torch.tensor([0, 0]))
