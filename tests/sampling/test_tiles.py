"""Tiled network calls for upsamplers trained on crops: blending, alignment of the low-res
tiles, the timestep limit, errors, and sampling through them."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.sampling import SamplerSettings
from pipeline.sampling.loading import load_sampling_model
from pipeline.sampling.tiles import Tiling, tile_offsets, tile_window
from pipeline.sampling.upsample import sample_upsample
from tests.sampling.test_cascade import low_res_images, upsampler_file  # noqa: F401 - fixture


def pointwise(x, t, low_res, text, mask=None):
    """Each output pixel depends on its own input pixel, the low-res pixel under it, its pixel
    of a full-resolution ``mask`` and the per-image inputs only: tiling must not change it."""
    under = F.interpolate(low_res, size=x.shape[-2:], mode="nearest")
    out = 2.0 * x + under + t[:, None, None, None] + text["proj"][:, :, None, None]
    out = out if mask is None else out * mask
    return torch.cat([out, -out], dim=1)


def inputs(batch=2, size=32, factor=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=gen)
    low = torch.randn(batch, 3, size // factor, size // factor, generator=gen)
    t = torch.tensor([5, 9][:batch])
    return x, t, low, {"proj": torch.randn(batch, 3, generator=gen)}


def test_a_pointwise_network_gives_the_same_output_tiled():
    x, t, low, text = inputs()
    whole = pointwise(x, t, low, text)
    for size, stride in ((8, 4), (16, 8), (16, 12), (32, 8)):
        tiled = Tiling(size, stride).wrap(pointwise)(x, t, low_res=low, text=text)
        torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)
    mask = (torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    tiled = Tiling(16, 8).wrap(pointwise)(x, t, low_res=low, text=text, mask=mask)
    torch.testing.assert_close(tiled, pointwise(x, t, low, text, mask), rtol=1e-5, atol=1e-5)


def test_each_call_sees_only_its_tile_as_groupnorm_would():
    """A network that outputs each call's spatial mean (what GroupNorm statistics see): a corner
    covered by one tile gets that tile's mean, not the image's."""
    calls = []

    def tile_mean(x, t, low_res):
        calls.append(tuple(x.shape))
        assert low_res.shape[-1] * 4 == x.shape[-1]  # the aligned low-res tile
        mean = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        return torch.cat([mean, mean], dim=1)

    x, t, low, _ = inputs()
    out = Tiling(16, 8).wrap(tile_mean)(x, t, low_res=low)
    assert calls == [(2 * 3, 3, 16, 16)] * 3  # a row of 3 tiles per call, 3 rows
    torch.testing.assert_close(out[:, :3, 0, 0], x[:, :, :16, :16].mean(dim=(2, 3)))
    torch.testing.assert_close(out[:, :3, -1, -1], x[:, :, 16:, 16:].mean(dim=(2, 3)))
    assert not torch.allclose(out[:, :3, 0, 0], x.mean(dim=(2, 3)))


def test_steps_at_or_above_below_t_run_on_the_whole_image():
    calls = []

    def record(x, t, low_res):
        calls.append(x.shape[-1])
        return torch.cat([x, x], dim=1)

    x, _, low, _ = inputs(batch=1)
    wrapped = Tiling(16, 8, below_t=200).wrap(record)
    wrapped(x, torch.tensor([200]), low_res=low)
    assert calls == [32]
    wrapped(x, torch.tensor([199]), low_res=low)
    assert calls == [32, 16, 16, 16]


def test_the_window_weighs_tile_edges_least():
    """Near a tile's zero-padded edge the network sees least of the image: the blend trusts it
    least there, never zero (an image corner is covered by one tile only)."""
    window = tile_window(8)
    assert window.shape == (8, 8) and bool((window > 0).all())
    torch.testing.assert_close(window, window.T)
    torch.testing.assert_close(window, window.flip(0))
    assert float(window[0, 0]) < float(window[0, 3]) < float(window[3, 3])
    assert float(window[3, 3]) == float(window.max())


def test_offsets_cover_the_image_and_end_flush():
    assert tile_offsets(128, Tiling(32, 8), 4) == list(range(0, 97, 8))
    assert tile_offsets(32, Tiling(16, 12), 4) == [0, 12, 16]
    assert tile_offsets(32, Tiling(32, 8), 4) == [0]


@pytest.mark.parametrize(
    ("tiling", "message"),
    [
        (Tiling(16, 6), "multiples of the upsampling factor 4"),
        (Tiling(64, 8), "do not fit a 32-px image"),
    ],
)
def test_bad_tilings_say_what_is_wrong(tiling, message):
    x, t, low, text = inputs()
    with pytest.raises(ValueError, match=message):
        tiling.wrap(pointwise)(x, t, low_res=low, text=text)


def test_tilings_with_gaps_are_refused():
    with pytest.raises(ValueError, match="leaves gaps"):
        Tiling(16, 20)


def test_tiled_upsampling_runs_the_model_on_tiles(upsampler_file):  # noqa: F811
    up = load_sampling_model(upsampler_file, expect="upsample")
    low = low_res_images()
    prompts = ["a red circle", "a blue square"]
    settings = SamplerSettings(steps="ddim3", temperature=0.0)
    whole = sample_upsample(up, prompts, low, settings)
    one_tile = sample_upsample(up, prompts, low, settings, tiling=Tiling(32, 8, below_t=1000))
    tiled = sample_upsample(up, prompts, low, settings, tiling=Tiling(16, 8, below_t=1000))
    assert tiled.shape == whole.shape == (2, 32, 32, 3) and tiled.dtype == torch.uint8
    difference = (one_tile.int() - whole.int()).abs()
    assert int(difference.max()) <= 1  # one tile is the whole image (up to rounding)
    assert (tiled.int() - whole.int()).abs().float().mean() > 1.0  # 16-px tiles see less
