"""Edit-triple shards: written on Ray Data, read back exactly, split by held-out combinations,
streamed for training and resumed mid-epoch; users' own triples checked, skipped with their
reasons, and written."""

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from pipeline.config.schema import SyntheticScenesConfig
from pipeline.data.edit_shards import EDIT_MANIFEST_FORMAT, build_edit_shards
from pipeline.data.manifest import read_manifest, split_shards
from pipeline.data.scene_edits import edit_region, is_held_out
from pipeline.data.shard_reader import iter_shard_samples
from pipeline.data.synthetic_scenes import render_scene
from pipeline.data.train_input import training_dataset
from pipeline.evaluation.edit_eval import edit_triples

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
    # the evaluate stage's held-out triples: each input with its exact target, in shard order
    held, why = edit_triples(tmp_path / "a", manifest["counts"]["val"])
    assert why == "" and len(held) == manifest["counts"]["val"]
    for triple in held:
        scenes = triple["meta"]
        assert np.array_equal(
            triple["source"], np.asarray(render_scene(scenes["source_scene"], 32))
        )
        assert np.array_equal(
            triple["target"], np.asarray(render_scene(scenes["edited_scene"], 32))
        )
    # finetune_instruct's stream (input_images): aligned pairs, a resume continues it exactly
    stream = dict(image_key="edited", extra_images=("source",), seed=4, epoch=1)
    full = training_dataset(tmp_path / "a", manifest=manifest, **stream).take_all()
    resumed = training_dataset(tmp_path / "a", manifest=manifest, skip_samples=5, **stream)
    tail = resumed.take_all()
    assert len(full) == manifest["counts"]["train"] and len(tail) == len(full) - 5
    for a, b in zip(full[5:], tail, strict=True):
        assert a["key"] == b["key"] and a["caption"] == b["caption"]
        assert np.array_equal(a["source"], b["source"]) and np.array_equal(a["image"], b["image"])
    again = build_edit_shards(tmp_path / "b", samples_per_shard=8, **args)
    assert [s["sha256"] for s in again["splits"]["train"]["shards"]] == [
        s["sha256"] for s in manifest["splits"]["train"]["shards"]
    ]


def _png(colour, size=(80, 64)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


OWN = {  # key -> (source, edited, instruction); None: the member is absent
    "good/a": (_png("red"), _png("blue"), b"make it blue"),
    "good/b": (_png("green"), _png("yellow"), b"make it yellow"),
    "no_edit": (_png("red"), None, b"make it blue"),
    "no_text": (_png("red"), _png("blue"), None),
    "empty_text": (_png("red"), _png("blue"), b"  "),
    "sizes": (_png("red"), _png("blue", (64, 64)), b"make it blue"),
    "broken": (b"not a png", _png("blue"), b"make it blue"),
}
REASONS = {
    "missing edited image": 1, "missing caption": 1, "empty caption": 1,
    "source and edited sizes differ": 1, "corrupt image": 1,
}  # fmt: skip


def _members(key, triple):
    names = (f"{key}.source.png", f"{key}.edited.PNG", f"{key}.txt")
    return [(name, data) for name, data in zip(names, triple, strict=True) if data is not None]


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("source", ["folder", "webdataset"])
def test_own_triples_are_checked_skipped_with_reasons_and_written(tmp_path, source):
    members = [m for key, triple in OWN.items() for m in _members(key, triple)]
    if source == "folder":
        for name, data in members + [("notes.md", b"not an input")]:
            (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "in" / name).write_bytes(data)
    else:
        (tmp_path / "in").mkdir()
        with tarfile.open(tmp_path / "in" / "part.tar", "w") as tar:
            for name, data in members + [("../escape.source.png", _png("red"))]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    common = dict(seed=0, val_fraction=0.0, resolution=32, samples_per_shard=8, source=source)
    with pytest.raises(ValueError, match="more than max_skipped_fraction"):
        build_edit_shards(tmp_path / "out", input_path=str(tmp_path / "in"), **common)
    manifest = build_edit_shards(
        tmp_path / "out", input_path=str(tmp_path / "in"), max_skipped_fraction=1.0, **common
    )
    expected = dict(REASONS, **({"unsafe member path": 1} if source == "webdataset" else {}))
    assert manifest["skip_reasons"] == expected
    assert manifest["counts"] == {"train": 2, "val": 0}
    (shard,) = split_shards(manifest, "train")
    samples = list(
        iter_shard_samples(tmp_path / "out" / shard["path"], images=("source", "edited"))
    )
    got = {s["caption"]: (s["source"][0, 0].tolist(), s["edited"][0, 0].tolist()) for s in samples}
    assert got == {"make it blue": ([255, 0, 0], [0, 0, 255]),
                   "make it yellow": ([0, 128, 0], [255, 255, 0])}  # fmt: skip
    assert all(s["source"].shape == (32, 32, 3) for s in samples)
