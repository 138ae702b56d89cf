"""Text-to-image sampling with classifier-free guidance on a real (tiny) GLIDE model."""

import pytest
import torch

from pipeline.diffusion import classifier_free_guidance_model
from pipeline.sampling import sample_text_to_image
from pipeline.sampling.loading import load_sampling_model
from pipeline.text import empty_caption_tokens, tokenize_batch

PROMPTS = ["a red circle", "a blue square"]


@pytest.fixture(scope="module")
def loaded(tiny_model_file):
    return load_sampling_model(tiny_model_file)


def sample(loaded, **kwargs):
    settings = dict(guidance_scale=3.0, steps="ddim4", seed=0, device="cpu")
    settings.update(kwargs)
    return sample_text_to_image(loaded.model, loaded.tokenizer, PROMPTS, **settings)


def test_same_seed_same_images_other_seed_other_images(loaded):
    first, again, other = sample(loaded), sample(loaded), sample(loaded, seed=1)
    assert first.dtype == torch.uint8 and first.shape == (2, 16, 16, 3)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_ancestral_sampling_is_seeded_too(loaded):
    first = sample(loaded, steps="5")
    assert torch.equal(first, sample(loaded, steps="5"))


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_guided_model_at_scale_0_and_1_is_the_unconditional_and_conditional_model(loaded, scale):
    model, ctx = loaded.model, loaded.model.text_ctx
    tokens, mask = tokenize_batch(loaded.tokenizer, PROMPTS, ctx)
    empty_tokens, empty_mask = empty_caption_tokens(ctx, len(PROMPTS))
    both = model.encode_text(torch.cat([tokens, empty_tokens]), torch.cat([mask, empty_mask]))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([500, 500])
    with torch.no_grad():
        guided = classifier_free_guidance_model(model, scale)(
            torch.cat([x, x]), torch.cat([t, t]), text_outputs=both
        )[:2]
        which = (tokens, mask) if scale == 1.0 else (empty_tokens, empty_mask)
        alone = model(x, t, tokens=which[0], mask=which[1])
    torch.testing.assert_close(guided[:, :3], alone[:, :3], rtol=1e-5, atol=1e-5)
    conditional = model(x, t, tokens=tokens, mask=mask)
    torch.testing.assert_close(guided[:, 3:], conditional[:, 3:], rtol=1e-5, atol=1e-5)


def test_text_is_encoded_once_per_call(loaded, monkeypatch):
    calls = []
    original = loaded.model.encode_text

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "encode_text", counting)
    sample(loaded, steps="ddim6")
    assert len(calls) == 1
