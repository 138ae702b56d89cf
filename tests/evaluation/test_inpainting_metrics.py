"""Inpainting metrics: the boundary band, its error, and generated-region crops."""

import math

import torch

from pipeline.evaluation import band_error, boundary_band, generated_region_crops


def box_keep(size=12, top=4, bottom=8, left=3, right=9):
    keep = torch.ones(size, size, dtype=torch.bool)
    keep[top:bottom, left:right] = False
    return keep


def test_band_is_the_generated_ring_next_to_known_pixels():
    keep = box_keep()
    band = boundary_band(keep, width=1)
    hole = ~keep
    assert not (band & keep).any()
    assert int(band.sum()) == int(hole.sum()) - 2 * 4  # 4x6 hole minus its 2x4 inside
    assert torch.equal(boundary_band(keep, width=3), hole)  # wide enough: the whole hole


def test_band_error_counts_only_the_band():
    keep = box_keep()
    target = torch.full((1, 12, 12, 3), 100, dtype=torch.uint8)
    perfect = target.clone()
    assert float(band_error(perfect, target, keep, width=1)[0]) == 0.0
    inside_only = target.clone()
    inside_only[0, 5:7, 4:8] = 255  # the hole's interior, off the band
    assert float(band_error(inside_only, target, keep, width=1)[0]) == 0.0
    edge = target.clone()
    edge[0, ~keep & boundary_band(keep, 1)] = 151  # every band pixel off by 51
    assert math.isclose(float(band_error(edge, target, keep, width=1)[0]), 51 / 255, rel_tol=1e-6)
    nothing = torch.ones(12, 12, dtype=torch.bool)
    assert math.isnan(float(band_error(perfect, target, nothing)[0]))


def test_crops_cover_the_generated_box():
    images = torch.zeros(2, 12, 12, 3, dtype=torch.uint8)
    images[0, 4:8, 3:9] = 200
    keep = torch.stack([box_keep(), torch.ones(12, 12, dtype=torch.bool)])
    crops = generated_region_crops(images, keep, size=8)
    assert crops.shape == (2, 8, 8, 3)
    assert (crops[0] == 200).all()  # exactly the box
    assert (crops[1] == 0).all()  # nothing generated: the whole frame


def test_compare_inpainting_runs_the_model_and_the_baseline(tmp_path):
    from pipeline.evaluation import compare_inpainting, evaluation_masks
    from pipeline.models import widen_for_inpainting
    from pipeline.sampling import SamplerSettings, SamplingModel
    from pipeline.sampling.loading import load_sampling_model
    from pipeline.text import get_tokenizer
    from tests.sampling.conftest import write_model_file

    tokenizer = get_tokenizer("clip")
    loaded = load_sampling_model(write_model_file(tmp_path / "m.pt", tokenizer))
    generator = torch.Generator().manual_seed(0)
    examples = [
        {
            "base": torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8, generator=generator),
            "caption": caption,
        }
        for caption in ("a red circle", "a blue square", "a white star")
    ]
    widened = widen_for_inpainting(loaded.model).eval()
    models = {
        "inpaint": SamplingModel.of_network(widened, tokenizer, loaded.diffusion_settings),
        "baseline": loaded,
    }
    results = compare_inpainting(models, examples, SamplerSettings(steps="ddim3"))
    keep = evaluation_masks(3, 16)
    assert torch.equal(keep, evaluation_masks(3, 16))  # the same masks for every model
    truth = torch.stack([ex["base"] for ex in examples])
    for name in ("inpaint", "baseline"):
        edited = results[name]["edited"]
        assert torch.equal(edited[keep], truth[keep])
        assert 0.0 < results[name]["band_error"] < 1.0
        assert results[name]["region_crops"].shape == (3, 16, 16, 3)
    assert results["ground_truth"]["region_crops"].shape == (3, 16, 16, 3)
