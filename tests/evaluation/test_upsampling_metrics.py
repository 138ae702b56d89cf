"""Upsampler metrics: PSNR, the bicubic baseline, and the evaluation of a model on held-out pairs."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.diffusion.parameterisation import low_res_upsampled
from pipeline.evaluation.upsampling import (
    PSNR_CAP_DB,
    bicubic_upsample,
    evaluate_upsampling,
    psnr,
)
from pipeline.sampling import SamplerSettings, to_uint8
from pipeline.sampling.loading import load_sampling_model
from pipeline.sampling.upsample import images_to_model
from pipeline.text import get_tokenizer
from tests.sampling.test_cascade import write_upsampler_file


def smooth_images(count: int, size: int) -> np.ndarray:
    """Slowly varying colour fields: what bicubic interpolation reconstructs well."""
    y, x = np.mgrid[0:size, 0:size] / size
    images = []
    for k in range(count):
        fields = [np.sin(2 * x + k), np.cos(3 * y - k), np.sin(x + y + 0.5 * k)]
        images.append(np.stack(fields, -1) * 100 + 128)
    return np.clip(np.round(np.stack(images)), 0, 255).astype(np.uint8)


def box_downsample(images: np.ndarray, size: int) -> np.ndarray:
    return np.stack(
        [np.asarray(Image.fromarray(i).resize((size, size), Image.Resampling.BOX)) for i in images]
    )


def test_psnr_of_known_differences():
    image = smooth_images(1, 16)[0]
    assert psnr(image, image)[0] == PSNR_CAP_DB  # identical: capped, finite
    offset = np.clip(image.astype(int) + 16, 0, 255).astype(np.uint8)
    assert psnr(offset, image)[0] == pytest.approx(20 * math.log10(255 / 16))
    pair = np.stack([image, offset])
    assert psnr(pair, np.stack([image, image])).tolist() == pytest.approx(
        [PSNR_CAP_DB, 20 * math.log10(255 / 16)]
    )
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(image, image[:8])


def test_bicubic_beats_nearest_and_keeps_constants():
    high = smooth_images(4, 64)
    low = box_downsample(high, 16)
    bicubic = bicubic_upsample(low, 64)
    nearest = np.stack(
        [np.asarray(Image.fromarray(i).resize((64, 64), Image.Resampling.NEAREST)) for i in low]
    )
    assert bicubic.shape == high.shape and bicubic.dtype == np.uint8
    assert psnr(bicubic, high).mean() > psnr(nearest, high).mean() + 3
    assert psnr(bicubic, high).mean() > 35  # smooth fields come back closely
    constant = np.full((2, 16, 16, 3), 77, np.uint8)
    assert np.array_equal(bicubic_upsample(constant, 64), np.full((2, 64, 64, 3), 77, np.uint8))


def test_the_bicubic_baseline_is_what_a_residual_upsampler_builds_on():
    """A residual upsampler that adds no detail scores exactly the baseline: bicubic_upsample
    equals the residual's U (low_res_upsampled) quantised as samples are."""
    low = box_downsample(smooth_images(3, 64), 16)
    low[0, 4:9, 4:9] = (250, 10, 30)  # a sharp-edged patch drives bicubic's overshoot past 255
    U = low_res_upsampled(images_to_model(torch.from_numpy(low)), (64, 64), torch.float64)
    difference = bicubic_upsample(low, 64).astype(int) - to_uint8(U).numpy().astype(int)
    assert np.abs(difference).max() <= 1  # rounding of values at .5 in float32 vs float64
    assert (difference != 0).mean() < 0.01


def test_evaluate_upsampling_returns_psnr_and_images(tmp_path):
    path = write_upsampler_file(tmp_path / "upsampler.pt", get_tokenizer("clip"))
    upsampler = load_sampling_model(path, expect="upsample")
    high = smooth_images(3, 32)
    pairs = [
        {"base": low, "hires": h, "caption": f"field {k}"}
        for k, (low, h) in enumerate(zip(box_downsample(high, 16), high, strict=True))
    ]
    settings = SamplerSettings(steps="ddim3", temperature=0.997, batch_size=2)
    result = evaluate_upsampling(upsampler, pairs, settings)
    assert result.upsampled.shape == result.bicubic.shape == (3, 32, 32, 3)
    assert np.array_equal(result.reference, high)
    assert result.per_image_upsampler.shape == (3,)
    assert result.psnr_bicubic == pytest.approx(float(psnr(result.bicubic, high).mean()))
    assert result.psnr_bicubic > result.psnr_upsampler  # an untrained model is noise
    metrics = result.metrics()
    assert metrics["num_images"] == 3 and all(math.isfinite(v) for v in metrics.values())
    again = evaluate_upsampling(upsampler, pairs, settings)
    assert np.array_equal(again.upsampled, result.upsampled)
    with pytest.raises(ValueError, match="does not match the upsampler"):
        evaluate_upsampling(upsampler, [{**pairs[0], "hires": high[0][:16, :16]}])
