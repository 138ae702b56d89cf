"""Edit-triple shards: written on Ray Data, read back exactly, split by held-out combinations."""

import numpy as np
import pytest

from pipeline.config.schema import SyntheticScenesConfig
from pipeline.data.edit_shards import EDIT_MANIFEST_FORMAT, build_edit_shards
from pipeline.data.manifest import read_manifest, split_shards
from pipeline.data.scene_edits import edit_region, is_held_out
from pipeline.data.shard_reader import iter_shard_samples
from pipeline.data.synthetic_scenes import render_scene

CFG = SyntheticScenesConfig()


@pytest.mark.usefixtures("ray_session")
def test_triples_round_trip_exactly_with_held_out_edits_only_in_val(tmp_path):
    args = dict(seed=2, synthetic=CFG, num_samples=24, val_fraction=0.25, resolution=32)
    manifest = build_edit_shards(tmp_path / "a", samples_per_shard=8, **args)
    assert sum(manifest["counts"].values()) + manifest["skipped"] == 24
    assert (
        read_manifest(tmp_path / "a", expected_format=EDIT_MANIFEST_FORMAT) == manifest
    )  # every shard present with its SHA-256
    for split in ("train", "val"):
        samples = [
            sample
            for shard in split_shards(manifest, split)
            for sample in iter_shard_samples(
                tmp_path / "a" / shard["path"], images=("source", "edited"), with_meta=True
            )
        ]
        assert len(samples) == manifest["counts"][split] > 0
        for sample in samples:
            meta = sample["meta"]
            assert is_held_out(meta["edit"], CFG) == (split == "val")
            source = np.asarray(render_scene(meta["source_scene"], 32))
            assert np.array_equal(sample["source"], source)
            assert np.array_equal(
                sample["edited"], np.asarray(render_scene(meta["edited_scene"], 32))
            )
            outside = ~edit_region(meta["edit"], 32)
            assert np.array_equal(sample["source"][outside], sample["edited"][outside])
            assert sample["caption"]  # the instruction
    again = build_edit_shards(tmp_path / "b", samples_per_shard=8, **args)
    assert [s["sha256"] for s in again["splits"]["train"]["shards"]] == [
        s["sha256"] for s in manifest["splits"]["train"]["shards"]
    ]
