"""The evaluation module on tiny model files: one figure set per sweep condition with its sample
counts, the cascade and inpainting parts, determinism; and the report's claims."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from pipeline.evaluation.module import GlideEvaluationModule
from pipeline.evaluation.reference_stats import reference_features_of_images
from pipeline.evaluation.stage import flat_metrics
from pipeline.models.clip_file import load_noised_clip
from pipeline.models.eval_clip import load_eval_clip
from pipeline.sampling import SamplerSettings
from pipeline.sampling.loading import load_sampling_model
from pipeline.sampling.text_to_image import sample_text_to_image
from pipeline.text import get_tokenizer
from tests.evaluation.helpers import smooth_images
from tests.sampling.conftest import write_model_file
from tests.sampling.test_cascade import write_upsampler_file
from tests.sampling.test_clip_guided import write_clip

CAPTIONS = ["a red circle", "a blue square", "a green star", "a white cross"] * 2
SETTINGS = dict(
    num_samples=8,
    batch_size=4,
    guidance_scales=[1.0, 3.0],
    clip_guidance_scales=[2.0],
    sample_steps="ddim3",
    cascade_guidance=3.0,
    cascade_samples=4,
    upsample_steps="ddim2",
    upsample_temperature=0.997,
    upsample_tile_size=16,  # 16-px tiles of the 32-px upsampler at its low-noise steps
    upsample_tile_stride=8,
    upsample_tile_below_t=500,
    upsample_projection=False,
    inpaint_samples=2,
    inpaint_guidance=5.0,
    inpaint_band_width=2,
    kid_subset_size=4,
    kid_subsets=5,
    confidence=0.9,
    bootstrap_replicates=30,
    min_claim_samples=4,
    seed=3,
    grid_images=2,
    scene_readout={"colours": ["red", "blue", "green", "white"], "shapes": ["circle", "star"]},
)


@pytest.fixture(scope="module")
def parts(tmp_path_factory, inception64):
    clip_tokenizer = get_tokenizer("clip")
    folder = tmp_path_factory.mktemp("eval")
    models = {
        "cfg": load_sampling_model(write_model_file(folder / "cfg.pt", clip_tokenizer)),
        "inpaint": load_sampling_model(
            write_model_file(folder / "inpaint.pt", clip_tokenizer, inpaint=True), expect="inpaint"
        ),
        "upsampler": load_sampling_model(
            write_upsampler_file(folder / "up.pt", clip_tokenizer), expect="upsample"
        ),
    }
    noised, _ = load_noised_clip(write_clip(folder / "noised_clip.pt"))
    eval_clip = load_eval_clip(write_clip(folder / "eval_clip.pt", noised=False))
    base = smooth_images(8, seed=0, size=16)
    hires = torch.nn.functional.interpolate(base.float(), size=(32, 32), mode="bilinear")
    hires = hires.round().clamp(0, 255).to(torch.uint8)
    reference = {
        "base": reference_features_of_images(base, inception64, folder / "cache"),
        "hires": reference_features_of_images(hires, inception64, folder / "cache"),
    }
    batches = [
        {
            "caption": CAPTIONS[start : start + 4],
            "index": torch.arange(start, start + 4),
            "base": base[start : start + 4].permute(0, 2, 3, 1).contiguous(),
            "hires": hires[start : start + 4].permute(0, 2, 3, 1).contiguous(),
        }
        for start in (0, 4)
    ]
    return models, noised, eval_clip, reference, batches, inception64


class Batches:
    """One test dataloader (Lightning reads a plain list as several)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def evaluate(parts, **overrides):
    models, noised, eval_clip, reference, batches, inception = parts
    torch.set_num_threads(1)
    module = GlideEvaluationModule(
        {**SETTINGS, **overrides}, models, eval_clip, reference, noised, inception=inception
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
    )
    trainer.test(module, dataloaders=Batches(batches), verbose=False)
    return module


def test_every_condition_gets_fid_kid_and_clip_score_with_sample_counts(parts):
    module = evaluate(parts)
    results = module.results
    assert results["clip_metric"] == "clip_score_proxy"
    conditions = [(r["guidance"], r["scale"]) for r in results["sweeps"]]
    assert conditions == [("cfg", 1.0), ("cfg", 3.0), ("clip", 2.0)]
    for row in results["sweeps"]:
        assert row["num_fake"] == 8 and row["num_real"] == 8
        assert np.isfinite(row["fid"]) and row["fid"] > 0
        assert np.isfinite(row["kid"]) and 0 <= row["clip_score_proxy"] <= 100
        # caption following read out on the captions that name a known colour and shape
        assert row["readout_scored"] == 4  # "a red circle", "a green star", twice each
        assert 0 <= row["both_accuracy"] <= row["colour_accuracy"] <= 1
    cascade = results["cascade"]
    assert cascade["num_fake"] == 4 and cascade["num_real"] == 8
    assert all(np.isfinite(cascade[k]) for k in ("psnr_upsampler", "psnr_bicubic", "fid_bicubic"))
    inpainting = results["inpainting"]
    assert inpainting["num_fake"] == 2
    assert inpainting["band_error_finetuned"] >= 0 and inpainting["band_error_replace"] >= 0
    # grids: the first grid_images captions of every condition, plus the real images
    assert module.grids["real"].shape == (2, 16, 16, 3)
    assert module.grids["cfg_3"].shape == (2, 16, 16, 3)
    assert module.grids["cascade"].shape == (2, 32, 32, 3)
    flat = flat_metrics(results)
    assert (
        "cfg_3/fid" in flat and "clip_2/clip_score_proxy" in flat and "cascade/psnr_bicubic" in flat
    )
    assert "cfg_3/colour_accuracy" in flat and "cfg_3/shape_accuracy" in flat
    assert "cfg_3/fid_low" in flat and "cascade/psnr_upsampler_high" in flat
    assert_every_figure_carries_an_interval(results)


def assert_every_figure_carries_an_interval(results):
    for row in results["sweeps"]:
        for key in ("fid", "clip_score_proxy", "kid", "both_accuracy"):
            assert row[f"{key}_low"] <= row[key] <= row[f"{key}_high"], key
        assert row["fid_high"] > row["fid_low"]  # eight different samples: a real spread
    for part, keys in (
        ("cascade", ("psnr_upsampler", "psnr_bicubic", "fid_upsampler", "fid_bicubic")),
        ("inpainting", ("band_error_finetuned", "fid_region_replace")),
    ):
        for key in keys:
            figures = results[part]
            assert figures[f"{key}_low"] <= figures[key] <= figures[f"{key}_high"], key
            assert len(results["replicates"][f"{part}/{key}"]) == 30
    retrieval = results["eval_clip_retrieval"]
    assert retrieval["pairs"] == 8 and retrieval["chance"] == pytest.approx(0.25)  # 4 captions x2
    assert retrieval["accuracy_low"] <= retrieval["accuracy"] <= retrieval["accuracy_high"]
    assert results["uncertainty"]["confidence"] == 0.9


def test_the_upsampler_rows_sample_on_the_configured_tiles(parts):
    """evaluate.upsample_tile_size reaches the upsampler: 16-px tiles at every step change its
    images from whole-image sampling."""
    only_cascade = dict(inpaint_samples=0, clip_guidance_scales=[], guidance_scales=[3.0])
    whole = evaluate(parts, **only_cascade, upsample_tile_size=0)
    tiled = evaluate(parts, **only_cascade, upsample_tile_below_t=1000)
    assert not np.array_equal(whole.grids["cascade"], tiled.grids["cascade"])
    assert whole.results["cascade"]["psnr_upsampler"] != tiled.results["cascade"]["psnr_upsampler"]


def test_the_upsampler_rows_keep_the_low_res_block_means_when_projected(parts):
    """evaluate.upsample_projection reaches the upsampler: its images change and move towards
    the real low-res inputs' block means (the untrained upsampler ignores them)."""
    only_cascade = dict(inpaint_samples=0, clip_guidance_scales=[], guidance_scales=[3.0])
    plain = evaluate(parts, **only_cascade, upsample_tile_size=0)
    projected = evaluate(parts, **only_cascade, upsample_tile_size=0, upsample_projection=True)
    assert not np.array_equal(plain.grids["cascade"], projected.grids["cascade"])
    psnr = [m.results["cascade"]["psnr_upsampler"] for m in (plain, projected)]
    assert psnr[1] > psnr[0] + 1.0


def test_same_settings_give_the_same_figures_and_other_seed_other_samples(parts):
    first = evaluate(parts, cascade_samples=0, inpaint_samples=0, clip_guidance_scales=[])
    second = evaluate(parts, cascade_samples=0, inpaint_samples=0, clip_guidance_scales=[])
    assert first.results == second.results
    np.testing.assert_array_equal(first.grids["cfg_3"], second.grids["cfg_3"])
    other = evaluate(parts, cascade_samples=0, inpaint_samples=0, clip_guidance_scales=[], seed=4)
    assert not np.array_equal(first.grids["cfg_3"], other.grids["cfg_3"])


def test_the_base_model_is_scored_on_its_own_unguided_samples(parts, tmp_path):
    """With a base model given, the sweep starts with its own samples (scale 1, the sweep's
    noise): what pretraining alone gives, beside what the CFG fine-tune adds."""
    models, *rest = parts
    base_file = write_model_file(tmp_path / "base.pt", get_tokenizer("clip"))
    stored = torch.load(base_file, weights_only=True)
    generator = torch.Generator().manual_seed(1)
    stored["state_dict"] = {
        k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
        for k, v in stored["state_dict"].items()
    }
    torch.save(stored, base_file)
    base = load_sampling_model(base_file)
    module = evaluate(
        ({**models, "base": base}, *rest),
        cascade_samples=0,
        inpaint_samples=0,
        clip_guidance_scales=[],
    )
    conditions = [(r["guidance"], r["scale"]) for r in module.results["sweeps"]]
    assert conditions == [("base", 1.0), ("cfg", 1.0), ("cfg", 3.0)]
    base_row = module.results["sweeps"][0]
    assert base_row["num_fake"] == 8 and base_row["readout_scored"] == 4
    assert "base_1/fid" in flat_metrics(module.results)
    settings = SamplerSettings(steps=SETTINGS["sample_steps"], seed=SETTINGS["seed"])
    expected = sample_text_to_image(base, CAPTIONS[:4], settings, guidance_scale=1.0)
    np.testing.assert_array_equal(module.grids["base_1"], expected[:2].numpy())
    assert not np.array_equal(module.grids["base_1"], module.grids["cfg_1"])
