"""The training input pipeline: rows, deterministic order per (seed, epoch), resume, tokens."""

import shutil

import numpy as np
import pytest
import ray

from pipeline.data.manifest import read_manifest
from pipeline.data.sharding import build_shards
from pipeline.data.train_input import (
    caption_tally,
    collate_to_torch,
    corruption_tally,
    epoch_plan,
    resume_position,
    samples_per_epoch,
    tokenize_captions,
    training_dataset,
)
from pipeline.text import encode_batch, get_tokenizer
from pipeline.training.data_feed import stream_window
from tests.data.helpers import config


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("train_input") / "shards"
    build_shards(config(out, "shard.num_samples=40", "shard.samples_per_shard=8"))
    return out


def _keys(ds):
    return [row["key"] for row in ds.take_all()]


def test_rows_have_the_model_encoding(shard_dir):
    rows = training_dataset(shard_dir, "train", seed=3, extra_images=("hires",)).take_all()
    assert len(rows) == 35 == samples_per_epoch(read_manifest(shard_dir))
    for row in rows[:5]:
        assert row["image"].dtype == np.uint8 and row["image"].shape == (16, 16, 3)
        assert row["hires"].dtype == np.uint8 and row["hires"].shape == (64, 64, 3)
        assert row["image"].max() > row["image"].min()  # a scene, not a blank
        assert isinstance(row["caption"], str) and row["caption"]
    # the upsampler's view: high-res image, low-res conditioning
    up = training_dataset(shard_dir, "train", image_key="hires", extra_images=("base",)).take(1)[0]
    assert up["image"].shape == (64, 64, 3) and up["base"].shape == (16, 16, 3)
    val = training_dataset(shard_dir, "val", verify_sha256=False).take_all()
    assert len(val) == 5 and all(row["key"].startswith("val-") for row in val)


def test_order_is_fixed_by_seed_and_epoch(shard_dir):
    manifest = read_manifest(shard_dir)
    first = _keys(training_dataset(shard_dir, seed=7, epoch=0, manifest=manifest))
    again = _keys(training_dataset(shard_dir, seed=7, epoch=0, manifest=manifest))
    other_epoch = _keys(training_dataset(shard_dir, seed=7, epoch=1, manifest=manifest))
    assert first == again
    assert first != other_epoch and sorted(first) == sorted(other_epoch)
    assert first != sorted(first)  # shuffled, not shard order
    # resume: skipping k samples continues exactly where the stream was
    assert (
        _keys(training_dataset(shard_dir, seed=7, epoch=0, skip_samples=13, manifest=manifest))
        == first[13:]
    )
    two = _keys(training_dataset(shard_dir, seed=7, epoch=0, num_epochs=2, manifest=manifest))
    assert two == first + other_epoch
    assert resume_position(35 * 3 + 13, 35) == (3, 13)


def test_workers_read_disjoint_parts_of_each_epoch_in_a_fixed_order(shard_dir):
    """Two data-parallel workers: worker r reads part r of every epoch's seeded order (35 train
    samples: 17 each, one left out), the same on every call; within a step (4 samples each) and
    within an epoch the workers never share a sample; a resumed worker continues its own stream.
    One worker reads the whole epoch, in the same order as before workers were split."""
    manifest = read_manifest(shard_dir)
    whole = _keys(training_dataset(shard_dir, seed=7, num_epochs=3, manifest=manifest))

    def part(rank, **kwargs):
        ds = training_dataset(
            shard_dir, seed=7, rank=rank, world_size=2, manifest=manifest, **kwargs
        )
        return _keys(ds)

    first, second = part(0, num_epochs=3), part(1, num_epochs=3)
    assert first == whole[:17] + whole[35:52] + whole[70:87]
    assert second == whole[17:34] + whole[52:69] + whole[87:104]
    assert part(0, num_epochs=3) == first  # fixed by (seed, number of workers)
    for epoch in range(3):
        mine, theirs = first[17 * epoch : 17 * (epoch + 1)], second[17 * epoch : 17 * (epoch + 1)]
        assert len(set(mine)) == 17 and not set(mine) & set(theirs)
    steps = [(first[i : i + 4], second[i : i + 4]) for i in range(0, 48, 4)]
    assert all(not set(a) & set(b) for a, b in steps)
    # resuming worker 1 after 5 steps of 4 samples: where stream_window says it starts
    window = stream_window(20, max_steps=12, batch=4, epoch_size=35, world_size=2)
    assert window == {"epoch": 1, "skip_samples": 3, "num_epochs": 3, "world_size": 2}
    resumed = _keys(training_dataset(shard_dir, seed=7, rank=1, manifest=manifest, **window))
    assert len(resumed) == 3 * 17 - 3 and resumed[: 51 - 20] == second[20:]
    with pytest.raises(ValueError, match="rank must be in"):
        epoch_plan(manifest, shard_dir, "train", seed=0, epoch=0, rank=2, world_size=2)


def test_epoch_plan_skips_whole_shards_first(shard_dir):
    manifest = read_manifest(shard_dir, verify_sha256=False)
    plan = epoch_plan(manifest, shard_dir, "train", seed=0, epoch=2, num_epochs=2, skip_samples=17)
    assert [p["epoch"] for p in plan].count(2) == 3  # 5 shards (8,8,8,8,3): 2 skipped whole
    assert sum(p["expected"] - p["skip"] for p in plan if p["epoch"] == 2) == 35 - 17
    assert [p["skip"] for p in plan if p["epoch"] == 3] == [0] * 5
    with pytest.raises(ValueError, match="skip_samples"):
        epoch_plan(manifest, shard_dir, "train", seed=0, epoch=0, skip_samples=35)


def test_torch_batches_and_tokens(shard_dir):
    ds = training_dataset(shard_dir, seed=1)
    batches = list(
        ds.iter_torch_batches(batch_size=16, drop_last=True, collate_fn=collate_to_torch)
    )
    assert len(batches) == 2
    image = batches[0]["image"]
    assert tuple(image.shape) == (16, 16, 16, 3) and str(image.dtype) == "torch.uint8"
    assert len(batches[0]["caption"]) == 16

    tokens = tokenize_captions(ds, "clip", 24, keep_text=False)
    batch = next(iter(tokens.iter_torch_batches(batch_size=8, drop_last=True)))
    assert set(batch) == {"image", "tokens", "mask"}
    assert tuple(batch["tokens"].shape) == (8, 24) and str(batch["tokens"].dtype) == "torch.int64"
    assert str(batch["mask"].dtype) == "torch.bool" and bool(batch["mask"][:, 0].all())
    keyed = tokenize_captions(ds, "clip", 24).take_all()
    assert [row["key"] for row in keyed] == _keys(ds)


def test_truncated_captions_are_tallied_once_per_sample(shard_dir):
    """Two epochs read every caption twice; each truncated sample counts once, for one line."""
    text_ctx = 6
    captions = {row["key"]: row["caption"] for row in training_dataset(shard_dir).take_all()}
    flags = encode_batch(get_tokenizer("clip"), list(captions.values()), text_ctx).truncated
    expected = sum(flags)
    assert 0 < expected < len(captions)  # some captions fit, some do not

    tally = caption_tally()
    ds = training_dataset(shard_dir, num_epochs=2)
    rows = tokenize_captions(ds, "clip", text_ctx, keep_text=False, tally=tally).take_all()
    assert len(rows) == 2 * len(captions)
    count, line = ray.get(tally.summary.remote())
    assert count == expected
    assert line.startswith(f"{expected} captions longer than text_ctx={text_ctx} tokens")
    truncated = [c for c, flag in zip(captions.values(), flags, strict=True) if flag]
    assert any(f"(e.g. {c!r})" in line for c in truncated)


def test_corrupt_shard_fails_or_is_skipped_and_tallied(shard_dir, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(shard_dir, copy)
    manifest = read_manifest(copy)
    victim = copy / manifest["splits"]["train"]["shards"][1]["path"]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception, match="shard-000001.tar") as err:
        training_dataset(copy, manifest=manifest).take_all()
    assert "member" in str(err.value)

    tally = corruption_tally()
    rows = training_dataset(copy, manifest=manifest, skip_corrupt=True, tally=tally).take_all()
    summary = ray.get(tally.summary.remote())
    assert len(rows) + summary["count"] == 35 and summary["count"] > 0
    assert summary["events"][0][0] == str(victim)


def test_upsampler_rows_are_aligned_crop_pairs_fixed_by_seed(shard_dir):
    """low_res_key + crop_size: (image, low_res) crops of the same region, the same crops on
    every call and after a resume, other crops in another epoch."""
    from PIL import Image

    from pipeline.data.image_prep import downsample

    def rows(**kwargs):
        ds = training_dataset(
            shard_dir, image_key="hires", low_res_key="base", crop_size=32, seed=5, **kwargs
        )
        return ds.take_all()

    first = rows()
    assert len(first) == 35 and "base" not in first[0]
    for row in first:
        assert row["image"].shape == (32, 32, 3) and row["low_res"].shape == (8, 8, 3)
        expected = np.asarray(downsample(Image.fromarray(row["image"]), 8))
        assert np.array_equal(row["low_res"], expected)
    again, resumed, other = rows(), rows(skip_samples=11), rows(epoch=1)
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(first, again, strict=True))
    tail = first[11:]
    assert [r["key"] for r in resumed] == [r["key"] for r in tail]
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(tail, resumed, strict=True))
    by_key = {r["key"]: r["image"] for r in other}
    assert sum(not np.array_equal(by_key[r["key"]], r["image"]) for r in first) > 20
    full = training_dataset(shard_dir, image_key="hires", low_res_key="base").take(1)[0]
    assert full["image"].shape == (64, 64, 3) and full["low_res"].shape == (16, 16, 3)
    with pytest.raises(ValueError, match="crop_size needs low_res_key"):
        training_dataset(shard_dir, image_key="hires", crop_size=32)
