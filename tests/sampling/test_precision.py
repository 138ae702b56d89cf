"""Half-precision sampling: the network runs under autocast, the sampler's maths in float32."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.models.execution import sample_in_precision
from pipeline.sampling import SamplerSettings, sample_text_to_image
from pipeline.sampling.loading import load_sampling_model
from pipeline.text import tokenize_batch

PROMPTS = ["a red circle", "a blue square"]


@pytest.fixture(scope="module")
def model_file(tiny_model_file, tmp_path_factory):
    """The tiny model with its zero-initialised layers filled, so its output is not zero."""
    payload = torch.load(tiny_model_file, weights_only=True)
    generator = torch.Generator().manual_seed(0)
    for weight in payload["state_dict"].values():
        if weight.is_floating_point() and not weight.any():
            weight.copy_(0.05 * torch.randn(weight.shape, generator=generator))
    path = tmp_path_factory.mktemp("filled") / "cfg.pt"
    torch.save(payload, path)
    return path


def network_output(loaded):
    torch.manual_seed(0)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 900])
    tokens, mask = tokenize_batch(loaded.tokenizer, PROMPTS, loaded.model.text_ctx)
    with torch.no_grad():
        return loaded.model(x, t, tokens=tokens, mask=mask)


def test_bf16_network_returns_float32_close_to_the_float32_network(model_file):
    full = load_sampling_model(model_file)
    half = load_sampling_model(model_file, precision="bf16-mixed")
    expected, got = network_output(full), network_output(half)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert not torch.equal(got, expected)  # autocast took effect
    scale = expected.abs().max()
    assert (got - expected).abs().max() < 0.05 * scale  # bf16 keeps 8 bits of mantissa
    assert set(half.model.state_dict()) == set(full.model.state_dict())


def test_bf16_sampling_draws_nearly_the_float32_images(model_file):
    def draw(precision):
        loaded = load_sampling_model(model_file, precision=precision)
        settings = SamplerSettings(steps="ddim4", seed=0)
        return sample_text_to_image(loaded, PROMPTS, settings, guidance_scale=3.0)

    full, half = draw("32-true"), draw("bf16-mixed")
    assert half.dtype == torch.uint8 and half.shape == full.shape
    assert not torch.equal(half, full)  # the network did run in bf16
    assert (half.int() - full.int()).abs().float().mean() < 4.0  # of 255


def test_glide_sample_precision_option(model_file, tmp_path):
    from pipeline.sampling.cli import main

    def run(out, *extra):
        args = ["--model", str(model_file), "--out", str(out), "--prompt", PROMPTS[0]]
        assert main([*args, "--steps", "ddim3", "--seed", "0", *extra]) == 0
        return np.asarray(Image.open(out / "000_000.png")).astype(int)

    full, half = run(tmp_path / "full"), run(tmp_path / "half", "--precision", "bf16-mixed")
    assert json.loads((tmp_path / "half/samples.json").read_text())["precision"] == "bf16-mixed"
    assert np.abs(half - full).mean() < 4.0 and not np.array_equal(half, full)


def test_unknown_precision_is_refused_with_the_choices(model_file):
    model = load_sampling_model(model_file).model
    with pytest.raises(ValueError, match="bf16-mixed"):
        sample_in_precision(model, "fp8")
