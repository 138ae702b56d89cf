"""The evaluate stage's two-object part: held-out relation captions sampled at every guidance
condition, read back, the rates with their intervals, the guidance claim on paired differences,
and what the report, metrics, plot and MLflow get from it."""

import numpy as np
import pytest

from pipeline.data.synthetic_scenes import (
    COLOURS,
    SHAPES,
    caption_scene,
    render_scene,
    sample_scene,
)
from pipeline.evaluation.pair_eval import (
    CLAIM_KEY,
    RATES,
    flat_metrics,
    metrics_record,
    pair_captions,
    pair_claim,
    plot_rows,
    read_pairs,
    report_lines,
    sweep_on_worker,
)
from pipeline.sampling.loading import load_sampling_model
from pipeline.text import get_tokenizer
from tests.sampling.conftest import write_model_file

PALETTE = {"colours": list(COLOURS), "shapes": list(SHAPES)}
SETTINGS = {
    "guidance_scales": [1.0, 3.0],
    "sample_steps": "ddim2",
    "seed": 5,
    "batch_size": 0,
    "confidence": 0.95,
    "grid_images": 2,
    "scene_readout": PALETTE,
}
SCENES = {"min_objects": 2, "max_objects": 2, "shapes": list(SHAPES), "colours": list(COLOURS),
          "sizes": ["medium", "large"], "backgrounds": ["gray"], "relation_probability": 1.0,
          "size_scale": 1.0, "object_count_weights": []}  # fmt: skip


def uncertainty(min_samples):
    return {"confidence": 0.95, "bootstrap_replicates": 200, "min_claim_samples": min_samples}


@pytest.fixture(scope="module")
def two_object_scenes():
    scenes = [sample_scene(i, 11, SCENES) for i in range(24)]
    images = np.stack([np.asarray(render_scene(s, 64)) for s in scenes])
    return images, [caption_scene(s) for s in scenes]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "cfg.pt"
    write_model_file(path, get_tokenizer("clip"))
    sampler = load_sampling_model(path)
    _, captions = _captions(3)
    return captions, *sweep_on_worker(SETTINGS, {"cfg": sampler, "base": sampler}, captions, "cpu")


def _captions(count):
    scenes = [sample_scene(i, 11, SCENES) for i in range(count)]
    return scenes, [caption_scene(s) for s in scenes]


def _part(per_condition, captions=40, seed=0):
    """A results["pairs"] part from per-condition all-right rates drawn per caption."""
    rng = np.random.default_rng(seed)
    per_caption = {
        name: {rate: (rng.random(captions) < p).astype(float).tolist() for rate in RATES}
        for name, p in per_condition.items()
    }
    rows = [{"guidance": n.rsplit("_", 1)[0], "scale": float(n.rsplit("_", 1)[1]),
             "all_rate": float(np.mean(v["all"]))} for n, v in per_caption.items()]  # fmt: skip
    return {"captions": ["c"] * captions, "seed": seed, "rows": rows, "per_caption": per_caption}


def test_the_generators_own_scenes_read_right_and_swapped_captions_wrong(two_object_scenes):
    images, captions = two_object_scenes
    right = read_pairs(images, captions, PALETTE)
    assert set(right) == set(RATES) and right["all"].mean() >= 0.95
    opposite = {"to the left of": "to the right of", "above": "below"}
    opposite |= {b: a for a, b in opposite.items()}
    flipped = []
    for caption in captions:
        phrase = next(p for p in opposite if f" {p} " in caption)
        flipped.append(caption.replace(f" {phrase} ", f" {opposite[phrase]} "))
    wrong = read_pairs(images, flipped, PALETTE)
    assert wrong["relation"].mean() <= 0.05 and wrong["colour"].mean() >= 0.95


def test_the_sweep_samples_every_caption_at_every_condition(swept):
    captions, part, grid = swept
    names = [(r["guidance"], r["scale"]) for r in part["rows"]]
    assert names == [("base", 1.0), ("cfg", 1.0), ("cfg", 3.0)]
    assert part["captions"] == captions and part["steps"] == "ddim2" and part["seed"] == 5
    for row in part["rows"]:
        assert row["captions"] == 3
        for rate in RATES:
            assert row[f"{rate}_rate_low"] <= row[f"{rate}_rate"] <= row[f"{rate}_rate_high"]
    assert list(part["per_caption"]) == ["base_1", "cfg_1", "cfg_3"]
    assert all(len(v["all"]) == 3 for v in part["per_caption"].values())
    assert grid.shape == (2 * 3, 16, 16, 3) and grid.dtype == np.uint8  # 2 shown x 3 conditions


def test_report_metrics_plot_and_mlflow_get_the_rows_with_both_ends(swept):
    _, part, _ = swept
    results = {"pairs": part, "uncertainty": uncertainty(10)}
    record = metrics_record(part)
    assert "per_caption" not in record and record["rows"] == part["rows"]
    assert record["captions"] == 3
    assert plot_rows(results) == part["rows"]
    metrics = flat_metrics(results)
    for key in ("all_rate", "all_rate_low", "relation_rate_high"):
        assert metrics[f"pairs_cfg_3/{key}"] == part["rows"][2][key]
    text = "\n".join(report_lines(results))
    assert "3 held-out captions" in text and "| cfg | 3 |" in text and "| base | 1 |" in text
    claim = pair_claim(results)
    assert claim.key == CLAIM_KEY and claim.verdict == "not measurable"
    assert "3 captions < 10" in claim.evidence


@pytest.mark.parametrize(
    ("rates", "verdict"),
    [
        ({"cfg_1": 0.2, "cfg_2": 0.5, "cfg_4": 0.9}, "reproduced"),
        ({"cfg_1": 0.9, "cfg_4": 0.2}, "contradicted"),
        ({"cfg_1": 0.5, "cfg_4": 0.5}, "inconclusive"),
    ],
)
def test_the_claim_compares_the_largest_scale_with_scale_1_paired(rates, verdict):
    part = _part(rates)
    if verdict == "inconclusive":  # the same captions right at both scales: difference 0
        part["per_caption"]["cfg_4"] = part["per_caption"]["cfg_1"]
    claim = pair_claim({"pairs": part, "uncertainty": uncertainty(10)})
    assert claim.verdict == verdict
    assert "s=4 minus s=1" in claim.evidence and "(40 captions)" in claim.evidence


def test_without_scale_1_or_the_part_the_claim_and_report_say_why():
    claim = pair_claim(
        {"pairs": _part({"cfg_2": 0.2, "cfg_4": 0.9}), "uncertainty": uncertainty(10)}
    )
    assert claim.verdict == "not measurable" and "scale 1 and a larger one" in claim.evidence
    results = {"pairs_skipped": "evaluate.pair_captions is 0", "uncertainty": uncertainty(10)}
    assert pair_claim(results).evidence == "evaluate.pair_captions is 0"
    assert "Not evaluated: evaluate.pair_captions is 0." in report_lines(results)
    assert plot_rows(results) == [] and flat_metrics(results) == {}


def test_captions_are_read_only_when_the_sweep_can_run(tmp_path):
    assert pair_captions(tmp_path, "val", 0, PALETTE) == ([], "evaluate.pair_captions is 0")
    found, why = pair_captions(tmp_path, "val", 4, None)
    assert found == [] and "not the embedded scenes" in why


def _write_val_shard(folder, captions):
    """A real tar shard of ``captions`` (tiny blank images) and its manifest, as the shard stage
    writes them."""
    import io

    from PIL import Image

    from pipeline.data.manifest import MANIFEST_FORMAT, write_manifest
    from pipeline.data.shard_writer import ShardSample, write_shard

    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    samples = [ShardSample(f"val-{i:03d}", png.getvalue(), png.getvalue(), c)
               for i, c in enumerate(captions)]  # fmt: skip
    info = write_shard(folder / "val" / "shard-000000.tar", samples)
    shard = {"path": "val/shard-000000.tar", "num_samples": info.num_samples,
             "bytes": info.size_bytes, "sha256": info.sha256}  # fmt: skip
    write_manifest(folder, {"format": MANIFEST_FORMAT, "source": "synthetic",
                            "splits": {"val": {"shards": [shard]}}})  # fmt: skip


def test_captions_are_the_held_out_relation_captions_in_shard_order(tmp_path):
    scenes = [sample_scene(i, 3, {**SCENES, "min_objects": 1}) for i in range(12)]
    captions = [caption_scene(scene) for scene in scenes]
    _write_val_shard(tmp_path / "mixed", captions)
    relation = [caption_scene(scene) for scene in scenes if scene["relations"]]
    assert relation[3] != captions[3]  # one-object captions come between them
    found, why = pair_captions(tmp_path / "mixed", "val", 4, PALETTE)
    assert why == "" and found == relation[:4]
    with pytest.raises(ValueError, match="lower evaluate.pair_captions"):
        pair_captions(tmp_path / "mixed", "val", len(relation) + 1, PALETTE)
    one_object = [caption_scene(s) for s in scenes if len(s["objects"]) == 1]
    _write_val_shard(tmp_path / "one", one_object)
    found, why = pair_captions(tmp_path / "one", "val", 4, PALETTE)
    assert found == [] and "holds no two-object relation captions" in why
    assert "shard.synthetic.max_objects" in why
