"""Text-guided editing: known pixels exact, both the inpainting model and the baseline, errors."""

import pytest
import torch

from pipeline.models import widen_for_inpainting
from pipeline.sampling import SamplerSettings, SamplingModel
from pipeline.sampling.inpaint import sample_inpaint
from pipeline.sampling.loading import load_sampling_model

DDIM4 = SamplerSettings(steps="ddim4")


@pytest.fixture(scope="module")
def text2im(tiny_model_file):
    return load_sampling_model(tiny_model_file)


@pytest.fixture(scope="module")
def inpaint_model(text2im):
    widened = widen_for_inpainting(text2im.model).eval()
    return SamplingModel.of_network(widened, text2im.tokenizer, text2im.diffusion_settings)


def source_and_mask():
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8, generator=generator)
    keep = torch.ones(16, 16, dtype=torch.bool)
    keep[4:12, 2:9] = False
    return image, keep


@pytest.mark.parametrize("variant", ["inpaint", "baseline"])
def test_known_pixels_come_out_exactly_equal_to_the_source(text2im, inpaint_model, variant):
    sampler = inpaint_model if variant == "inpaint" else text2im
    image, keep = source_and_mask()
    prompts = ["a red circle", "a blue square"]
    edited = sample_inpaint(sampler, prompts, image, keep, DDIM4)
    assert edited.shape == (2, 16, 16, 3) and edited.dtype == torch.uint8
    assert torch.equal(edited[:, keep], image[keep].expand(2, -1, -1))
    assert not torch.equal(edited[:, ~keep], image[~keep].expand(2, -1, -1))
    again = sample_inpaint(sampler, prompts, image, keep, DDIM4)
    assert torch.equal(edited, again)


def test_the_inpainting_model_sees_the_masked_image(text2im, inpaint_model, monkeypatch):
    seen = {}
    forward = inpaint_model.model.forward

    def spy(x, t, **kwargs):
        seen.update(kwargs)
        return forward(x, t, **kwargs)

    monkeypatch.setattr(inpaint_model.model, "forward", spy)
    image, keep = source_and_mask()
    sample_inpaint(inpaint_model, ["a cross"], image, keep, SamplerSettings(steps="ddim2"))
    assert seen["inpaint_mask"].shape == (2, 1, 16, 16)  # [conditional; unconditional]
    assert torch.equal(seen["inpaint_mask"][0, 0], keep.float())
    expected = image.permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(seen["inpaint_image"][1], expected)


def test_inputs_an_edit_cannot_use(text2im):
    image, keep = source_and_mask()
    with pytest.raises(ValueError, match="mask is 8x16 but the image is 16x16"):
        sample_inpaint(text2im, ["x"], image, keep[:, :8])
    with pytest.raises(ValueError, match="nothing to generate"):
        sample_inpaint(text2im, ["x"], image, torch.ones_like(keep))
    with pytest.raises(ValueError, match="model works at 16x16"):
        big = torch.zeros(32, 32, 3, dtype=torch.uint8)
        sample_inpaint(text2im, ["x"], big, torch.zeros(32, 32, dtype=torch.bool))
