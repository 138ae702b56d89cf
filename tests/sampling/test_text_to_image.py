"""Text-to-image sampling with classifier-free guidance on a real (tiny) GLIDE model."""

from dataclasses import replace

import pytest
import torch

from pipeline.diffusion import classifier_free_guidance_model
from pipeline.models.model_file import ModelFileError
from pipeline.sampling import (
    Conditioning,
    SamplerSettings,
    SamplingModel,
    sample_images,
    sample_images_progressive,
    sample_text_to_image,
)
from pipeline.sampling.loading import MissingDiffusionError, load_sampling_model
from pipeline.text import empty_caption_tokens, tokenize_batch
from tests.sampling.conftest import write_model_file
from tests.training.conftest import DIFFUSION

PROMPTS = ["a red circle", "a blue square"]


@pytest.fixture(scope="module")
def loaded(tiny_model_file):
    return load_sampling_model(tiny_model_file)


def sample(loaded, **changes):
    settings = replace(SamplerSettings(steps="ddim4", seed=0, device="cpu"), **changes)
    return sample_text_to_image(loaded, PROMPTS, settings, guidance_scale=3.0)


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


@pytest.mark.parametrize("steps", ["4", "ddim4"])
def test_progressive_sampling_ends_on_the_plain_calls_images(loaded, steps):
    settings = SamplerSettings(steps=steps, seed=2)
    conditioning = Conditioning(guidance_scale=3.0)
    states = list(sample_images_progressive(loaded, PROMPTS, settings, conditioning))
    assert len(states) == 4 and states[0].shape == (2, 3, 16, 16)
    assert not torch.equal(states[0], states[-1])  # intermediate x_t
    assert torch.equal(states[-1], sample_images(loaded, PROMPTS, settings, conditioning))
    with pytest.raises(ValueError, match="one batch"):
        next(
            sample_images_progressive(
                loaded, PROMPTS, replace(settings, batch_size=1), conditioning
            )
        )


def test_a_model_file_that_predicts_v_samples_with_a_v_diffusion(loaded, tmp_path):
    assert loaded.prediction_type == "epsilon"  # written without the option: GLIDE's
    assert loaded.diffusion("fast27").prediction_type == "epsilon"
    settings = {**DIFFUSION, "prediction_type": "v", "low_res_residual": False, "sigma_data": 0.5}
    path = write_model_file(tmp_path / "v.pt", loaded.tokenizer, diffusion=settings)
    v_model = load_sampling_model(path)
    assert v_model.diffusion("fast27").prediction_type == "v"
    assert v_model.diffusion().prediction_type == "v"
    assert v_model.diffusion("fast27").sigma_data == 0.5
    assert v_model.diffusion_settings == settings
    assert not torch.equal(sample(v_model), sample(loaded))  # same weights, read as v


def test_a_network_without_its_diffusion_settings_cannot_sample(loaded):
    with pytest.raises(MissingDiffusionError, match="noise_schedule"):
        SamplingModel.of_network(loaded.model, loaded.tokenizer, {"diffusion_steps": 1000})
    with pytest.raises(MissingDiffusionError, match="no default"):
        SamplingModel.of_network(loaded.model, loaded.tokenizer, None)
    with pytest.raises(TypeError):
        SamplingModel(loaded.model, loaded.tokenizer)  # type: ignore[call-arg]


def test_a_model_file_without_diffusion_settings_is_refused(tiny_model_file, tmp_path):
    payload = torch.load(tiny_model_file, weights_only=False)
    del payload["diffusion"]
    torch.save(payload, tmp_path / "no_diffusion.pt")
    with pytest.raises(ModelFileError, match="diffusion settings"):
        load_sampling_model(tmp_path / "no_diffusion.pt")


def test_the_model_carries_its_schedule(loaded):
    assert loaded.diffusion_settings == {
        "diffusion_steps": 1000,
        "noise_schedule": "squaredcos_cap_v2",
        "prediction_type": "epsilon",
        "low_res_residual": False,
        "sigma_data": 1.0,
    }
    assert loaded.diffusion("ddim4").num_timesteps == 4
