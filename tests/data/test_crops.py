"""Aligned crop pairs for the upsampler: the low-res crop is the downsampled high-res crop."""

import numpy as np
import pytest
from PIL import Image

from pipeline.config import SyntheticScenesConfig
from pipeline.data.crops import crop_pair, crop_row
from pipeline.data.image_prep import downsample
from pipeline.data.synthetic_scenes import generate_sample
from tests.data.helpers import pattern


def cascade_pair(index: int, high: int = 64, low: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A shard-style pair: a rendered scene and its area-averaged base image."""
    image, _, _ = generate_sample(index, 0, SyntheticScenesConfig(), high)
    return np.asarray(image), np.asarray(downsample(image, low))


@pytest.mark.parametrize("crop_size", [4, 16, 32, 60])
def test_low_res_crop_is_the_downsampled_high_res_crop(crop_size):
    textures = [pattern(64, 64, seed) for seed in range(3)]  # detail everywhere
    pairs = [cascade_pair(index) for index in range(3)]
    pairs += [(t, np.asarray(downsample(Image.fromarray(t), 16))) for t in textures]
    for index, (high, low) in enumerate(pairs):
        rng = np.random.default_rng(index)
        high_crop, low_crop = crop_pair(high, low, crop_size, rng)
        assert high_crop.shape == (crop_size, crop_size, 3)
        assert low_crop.shape == (crop_size // 4, crop_size // 4, 3)
        expected = np.asarray(downsample(Image.fromarray(high_crop), crop_size // 4))
        assert np.array_equal(low_crop, expected)


def test_crops_cover_the_image_and_follow_the_generator():
    high, low = cascade_pair(0)
    offsets = set()
    for seed in range(200):
        crop, _ = crop_pair(high, low, 32, np.random.default_rng(seed))
        again, _ = crop_pair(high, low, 32, np.random.default_rng(seed))
        assert np.array_equal(crop, again)
        matches = [
            (y, x)
            for y in range(0, 33, 4)
            for x in range(0, 33, 4)
            if np.array_equal(high[y : y + 32, x : x + 32], crop)
        ]
        offsets.add(matches[0])
    # every offset on the low-res grid (9 x 9 of them) is drawn; none off it
    assert len(offsets) > 60 and all(y % 4 == 0 and x % 4 == 0 for y, x in offsets)


def test_full_size_and_bad_crop_sizes():
    high, low = cascade_pair(1)
    rng = np.random.default_rng(0)
    for full in (0, 64):
        h, lo = crop_pair(high, low, full, rng)
        assert h is high and lo is low
    with pytest.raises(ValueError, match="multiple of the scale factor 4"):
        crop_pair(high, low, 30, rng)
    with pytest.raises(ValueError, match="multiple of the scale factor"):
        crop_pair(high, low, 128, rng)
    with pytest.raises(ValueError, match="not a multiple"):
        crop_pair(high, low[:15, :15], 32, rng)
    row = crop_row({"hires": high, "base": low, "caption": "c"}, "hires", "base", 16, rng)
    assert row["hires"].shape == (16, 16, 3) and row["base"].shape == (4, 4, 3)
    assert row["caption"] == "c"
