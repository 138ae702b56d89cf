"""Projecting an upsampler's x0 predictions onto the low-res input's block means."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.sampling import SamplerSettings
from pipeline.sampling.loading import load_sampling_model
from pipeline.sampling.low_res_projection import low_res_projection, project_onto_low_res
from pipeline.sampling.upsample import sample_upsample
from tests.sampling.test_cascade import upsampler_file  # noqa: F401 - fixture


def detail(images, factor):
    """Each pixel's deviation from the mean of its factor x factor block."""
    means = F.avg_pool2d(images, factor)
    return images - F.interpolate(means, scale_factor=factor, mode="nearest")


def test_projected_images_keep_their_detail_and_take_the_low_res_block_means():
    gen = torch.Generator().manual_seed(0)
    x0, low = torch.randn(2, 3, 16, 16, generator=gen), torch.randn(2, 3, 4, 4, generator=gen)
    projected = project_onto_low_res(x0, low)
    torch.testing.assert_close(F.avg_pool2d(projected, 4), low)
    torch.testing.assert_close(detail(projected, 4), detail(x0, 4))
    assert not torch.allclose(F.avg_pool2d(x0, 4), low)  # the projection did move it
    torch.testing.assert_close(project_onto_low_res(projected, low), projected)  # idempotent


def test_guidance_copies_are_projected_onto_their_own_rows_then_post_processed():
    gen = torch.Generator().manual_seed(1)
    low = torch.randn(2, 3, 4, 4, generator=gen)
    x0 = torch.randn(4, 3, 8, 8, generator=gen)  # [conditional; unconditional] of 2 prompts
    projected = low_res_projection(low, then=lambda x: x * 2)(x0)
    torch.testing.assert_close(F.avg_pool2d(projected, 2), 2 * torch.cat([low, low]))


@pytest.mark.parametrize("shapes", [((1, 3, 16, 16), (1, 3, 5, 5)), ((1, 3, 16, 8), (1, 3, 4, 4))])
def test_shapes_that_do_not_divide_are_refused(shapes):
    with pytest.raises(ValueError, match="projection needs square images"):
        project_onto_low_res(torch.zeros(shapes[0]), torch.zeros(shapes[1]))


def test_upsampled_images_have_the_low_res_images_as_block_means(upsampler_file):  # noqa: F811
    up = load_sampling_model(upsampler_file, expect="upsample")
    gen = torch.Generator().manual_seed(0)
    low = torch.randint(64, 192, (3, 16, 16, 3), generator=gen).to(torch.uint8)  # no clipping
    settings = SamplerSettings(steps="ddim3", temperature=0.0)
    prompts = ["a red circle", "a blue square", "a green star"]
    plain = sample_upsample(up, prompts, low, settings)
    projected = sample_upsample(up, prompts, low, settings, project=True)
    one_at_a_time = sample_upsample(
        up,
        prompts,
        low,
        SamplerSettings(steps="ddim3", temperature=0.0, batch_size=1),
        project=True,
    )

    def block_errors(images):
        """|block mean - low-res pixel| over the blocks that no clipping to [0, 255] touched."""
        pixels = images.permute(0, 3, 1, 2).float()
        clipped = F.max_pool2d(((pixels == 0) | (pixels == 255)).float(), 2) > 0
        errors = (F.avg_pool2d(pixels, 2) - low.permute(0, 3, 1, 2).float()).abs()
        return errors[~clipped]

    assert block_errors(projected).numel() > 0.1 * low.numel()  # enough unclipped blocks
    assert block_errors(plain).max() > 5  # an untrained upsampler ignores its low-res input
    for images in (projected, one_at_a_time):  # batches of 1: each onto its own low-res image
        assert block_errors(images).max() <= 0.5 + 1e-4  # the rounding of each pixel to 8 bits
