"""Instruction editing: one tripled forward pass per step, the image dropped in the last third,
the instruction encoded once; clear errors for unusable inputs."""

import pytest
import torch

from pipeline.models import widen_for_instruct
from pipeline.sampling import SamplerSettings, SamplingModel
from pipeline.sampling.instruct_edit import sample_instruct_edit
from pipeline.sampling.loading import load_sampling_model

DDIM4 = SamplerSettings(steps="ddim4")
GENERATOR = torch.Generator().manual_seed(0)


@pytest.fixture(scope="module")
def text2im(tiny_model_file):
    return load_sampling_model(tiny_model_file)


@pytest.fixture(scope="module")
def instruct_model(text2im):
    widened = widen_for_instruct(text2im.model).eval()
    with (
        torch.no_grad()
    ):  # as if trained: zero-initialised layers (the output, the new inputs) live
        for param in widened.parameters():
            if not param.any():
                param.copy_(torch.randn(param.shape, generator=GENERATOR) * 0.05)
        source_weights = widened.input_blocks[0][0].weight[:, 3:6]
        source_weights.copy_(torch.randn(source_weights.shape, generator=GENERATOR) * 0.2)
    return SamplingModel.of_network(widened, text2im.tokenizer, text2im.diffusion_settings)


def _image(seed=0):
    return torch.randint(
        0, 256, (16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def test_one_tripled_pass_per_step_with_the_image_dropped_last(instruct_model, monkeypatch):
    calls = []
    network = instruct_model.model
    original_forward, original_encode = network.forward, network.encode_text
    monkeypatch.setattr(
        network, "forward", lambda *a, **kw: calls.append(kw) or original_forward(*a, **kw)
    )
    encoded = []
    monkeypatch.setattr(network, "encode_text", lambda *a: encoded.append(a) or original_encode(*a))
    image = _image()
    edits = sample_instruct_edit(instruct_model, ["make it blue", "add a star"], image, DDIM4)
    assert edits.shape == (2, 16, 16, 3) and edits.dtype == torch.uint8
    assert len(calls) == 4 and len(encoded) == 1  # ddim4; the text once per call
    source = calls[0]["source_image"]
    assert source.shape[0] == 6
    expected = image.permute(2, 0, 1).float().div(127.5).sub(1)
    assert torch.allclose(source[:4], expected.expand(4, -1, -1, -1)) and not source[4:].any()


def test_scales_change_the_edit_and_a_seed_repeats_it(instruct_model):
    image = _image(1)
    plain = sample_instruct_edit(instruct_model, ["make it blue"], image, DDIM4)
    again = sample_instruct_edit(instruct_model, ["make it blue"], image, DDIM4)
    stronger = sample_instruct_edit(
        instruct_model, ["make it blue"], image, DDIM4, image_guidance=3.0
    )
    assert torch.equal(plain, again) and not torch.equal(plain, stronger)


def test_unusable_inputs_are_refused_with_clear_errors(text2im, instruct_model):
    with pytest.raises(ValueError, match="no input for the image to edit"):
        sample_instruct_edit(text2im, ["make it blue"], _image(), DDIM4)
    with pytest.raises(ValueError, match="non-empty instruction"):
        sample_instruct_edit(instruct_model, ["  "], _image(), DDIM4)
    with pytest.raises(ValueError, match="the model works at 16x16"):
        sample_instruct_edit(
            instruct_model, ["make it blue"], torch.zeros(8, 8, 3, dtype=torch.uint8), DDIM4
        )


def test_one_image_per_instruction_reaches_its_row(instruct_model, monkeypatch):
    calls = []
    network = instruct_model.model
    original_forward = network.forward
    monkeypatch.setattr(
        network, "forward", lambda *a, **kw: calls.append(kw) or original_forward(*a, **kw)
    )
    images = torch.stack([_image(2), _image(3)])
    sample_instruct_edit(instruct_model, ["make it blue", "add a star"], images, DDIM4)
    expected = images.permute(0, 3, 1, 2).float().div(127.5).sub(1)
    source = calls[0]["source_image"]  # [(I, T) x 2; (I, 0) x 2; (0, 0) x 2]
    assert torch.allclose(source[:2], expected) and torch.allclose(source[2:4], expected)
    with pytest.raises(ValueError, match="2 images for 3 instructions"):
        sample_instruct_edit(instruct_model, ["a", "b", "c"], images, DDIM4)
