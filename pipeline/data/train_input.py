"""The training input pipeline: shards -> a deterministic Ray Dataset of training rows.

Rows: ``{"image": uint8 [H, W, 3], "caption": str, "key": str}``, plus ``"base"`` /
``"hires"`` (same encoding) when asked through ``extra_images``, plus ``"low_res"`` when asked
through ``low_res_key`` (the upsampler takes ``image_key="hires", low_res_key="base"``, and
``crop_size`` for aligned random crops of both, see pipeline/data/crops.py; the crop of sample
``i`` of a shard is drawn from ``default_rng([seed, epoch, shard_id, i, CROP_STREAM])``, so it
does not depend on task timing or on where a resumed run starts). Images stay 8-bit until they reach the training
device, where ``images_to_model_range`` maps them to float [-1, 1] CHW: a quarter of the bytes
in Ray's object store and in transfers. Images are never flipped.

Order. For a given ``(seed, epoch)`` the order is fixed: the shard list is permuted with
``default_rng([seed, epoch])``, and the samples of each shard with
``default_rng([seed, epoch, shard_id])``. One Ray task reads one shard; Ray Data runs with
``preserve_order=True``, so the output order does not depend on task timing. A different epoch
gives a different order; the same ``(seed, epoch)`` gives the same order on every call.

Several epochs can be chained into one stream (``num_epochs``), which is what a trainer that
counts steps (not epochs) wants: the dataset handed to Ray Train covers the whole run.

Several workers (data parallel). Worker ``rank`` of ``world_size`` reads its own part of each
epoch: the epoch's permuted sequence of ``E`` samples is cut into ``world_size`` equal, contiguous
parts of ``E // world_size`` samples (:func:`part_size`; the last ``E % world_size`` samples of
each epoch's order are left out), and worker ``rank`` gets part ``rank``. So the workers read
disjoint samples within an epoch, every worker's stream is fixed by ``(seed, world_size, rank)``,
and since all parts have the same length the workers move from epoch to epoch together. With one
worker the part is the whole epoch, in the order above.

Resuming mid-epoch (how the trainer does it), per worker:

1. Count the samples this worker consumed since the start of training:
   ``consumed = global_step * per_worker_batch`` (``drop_last=True`` batches).
2. ``epoch, skip = resume_position(consumed, part_size(samples_per_epoch(manifest), world))``.
3. ``training_dataset(..., seed=seed, epoch=epoch, skip_samples=skip, num_epochs=n, rank=rank,
   world_size=world)``. The skipped samples are dropped before decoding (whole shards by the
   manifest's counts, then inside the shard after its permutation), so resuming costs nothing,
   and the stream continues exactly where the interrupted run was.

Samples dropped as corrupt with ``skip_corrupt`` shift later positions of that worker's stream
(they are counted in a :func:`corruption_tally`).

Ray Train converts batches with ``iter_torch_batches``, which refuses string columns: pass
``collate_fn=collate_to_torch`` (a :class:`CollateToTorch`; strings become lists), or use :func:`tokenize_captions` with
``keep_text=False``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.data.collate_fn import NumpyBatchCollateFn

from pipeline.data.crops import crop_row
from pipeline.data.manifest import read_manifest, split_shards
from pipeline.data.shard_reader import (
    IMAGE_MEMBERS,
    CorruptionCounter,
    CorruptShardError,
    decode_sample,
    iter_raw_samples,
)

_ROWS_PER_BLOCK = 64
CROP_STREAM = 0xC209  # keeps the crop generators apart from the order generators


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFFFFFFFFFF for k in keys])


def samples_per_epoch(manifest: dict[str, Any], split: str = "train") -> int:
    return sum(int(shard["num_samples"]) for shard in split_shards(manifest, split))


def resume_position(samples_consumed: int, epoch_size: int) -> tuple[int, int]:
    """(epoch, samples to skip in it) after ``samples_consumed`` samples counted from epoch 0."""
    if epoch_size <= 0:
        raise ValueError("epoch_size must be positive")
    return divmod(int(samples_consumed), int(epoch_size))


def part_size(epoch_size: int, world_size: int) -> int:
    """Samples per epoch that each of ``world_size`` workers reads (the rest are left out)."""
    if world_size < 1:
        raise ValueError("world_size must be >= 1")
    return int(epoch_size) // int(world_size)


def epoch_plan(
    manifest: dict[str, Any],
    shard_dir: str | os.PathLike[str],
    split: str,
    *,
    seed: int,
    epoch: int,
    num_epochs: int = 1,
    skip_samples: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> list[dict[str, Any]]:
    """The read tasks of worker ``rank``, in stream order: ``{"path", "shard_id", "epoch",
    "skip", "stop", "expected"}`` (rows ``skip:stop`` of the shard's permuted order)."""
    shards = split_shards(manifest, split)
    if not shards:
        raise ValueError(f"split {split!r} of {shard_dir} has no shards")
    if num_epochs < 1:
        raise ValueError("num_epochs must be >= 1")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    part = part_size(sum(int(s["num_samples"]) for s in shards), world_size)
    if part < 1:
        raise ValueError(f"split {split!r} has fewer samples than the {world_size} workers")
    if not 0 <= skip_samples < part:
        raise ValueError(f"skip_samples must be in [0, {part}) for split {split!r}")
    plan = []
    for e in range(epoch, epoch + num_epochs):
        first = rank * part + (skip_samples if e == epoch else 0)  # in the epoch's sequence
        end = (rank + 1) * part
        offset = 0
        for shard_id in _rng(seed, e).permutation(len(shards)):
            shard = shards[int(shard_id)]
            count = int(shard["num_samples"])
            lo, hi = max(first, offset), min(end, offset + count)
            if lo < hi:
                plan.append(
                    {
                        "path": str(Path(shard_dir) / shard["path"]),
                        "shard_id": int(shard_id),
                        "epoch": e,
                        "skip": lo - offset,
                        "stop": hi - offset,
                        "expected": count,
                    }
                )
            offset += count
    return plan


def read_shard_rows(
    batch: dict[str, np.ndarray],
    *,
    seed: int,
    image_key: str,
    extra_images: Sequence[str],
    skip_corrupt: bool,
    tally: Any = None,
    rows_per_block: int = _ROWS_PER_BLOCK,
    low_res_key: str = "",
    crop_size: int = 0,
):
    """Ray Data worker: one shard (a batch of one plan row) -> its rows, permuted, in blocks."""
    images = [image_key, *[name for name in extra_images if name != image_key]]
    columns = [*images, "low_res"] if low_res_key else images
    if low_res_key:
        images = [*images, low_res_key]
    for path, shard_id, epoch, skip, stop, expected in zip(
        batch["path"],
        batch["shard_id"],
        batch["epoch"],
        batch["skip"],
        batch["stop"],
        batch["expected"],
        strict=True,
    ):
        path = str(path)
        counter = CorruptionCounter()

        def on_corrupt(error: CorruptShardError, samples: int, counter=counter) -> None:
            if not skip_corrupt:
                raise error
            counter.record(error, samples)

        raws = list(iter_raw_samples(path, on_corrupt, expected_samples=int(expected)))
        order = _rng(seed, int(epoch), int(shard_id)).permutation(len(raws))[int(skip) : int(stop)]
        rows: list[dict[str, Any]] = []
        for i in order:
            try:
                row = decode_sample(path, raws[int(i)], images)
            except CorruptShardError as error:
                on_corrupt(error, 1)
                continue
            if low_res_key:
                crop_rng = _rng(seed, int(epoch), int(shard_id), int(i), CROP_STREAM)
                row = crop_row(row, image_key, low_res_key, crop_size, crop_rng)
                row["low_res"] = row.pop(low_res_key)
            rows.append(row)
            if len(rows) >= rows_per_block:
                yield _to_block(rows, image_key, columns)
                rows = []
        if rows:
            yield _to_block(rows, image_key, columns)
        if counter.count and tally is not None:
            ray.get(tally.record.remote(counter.events))  # recorded before the rows count as read


def _to_block(rows: list[dict[str, Any]], image_key: str, images: Sequence[str]):
    block: dict[str, np.ndarray] = {"image": np.stack([row[image_key] for row in rows])}
    for name in images:
        if name != image_key:
            block[name] = np.stack([row[name] for row in rows])
    for name in ("caption", "key"):
        column = np.empty(len(rows), dtype=object)
        column[:] = [row[name] for row in rows]
        block[name] = column
    return block


def _check_images(
    image_key: str, extra_images: Sequence[str], low_res_key: str, crop_size: int
) -> None:
    """Clear errors for image columns a training stream cannot make."""
    for name in (image_key, *extra_images, *([low_res_key] if low_res_key else [])):
        if name not in IMAGE_MEMBERS:
            raise ValueError(f"unknown image {name!r}; expected one of {sorted(IMAGE_MEMBERS)}")
    if low_res_key and low_res_key in (image_key, *extra_images):
        raise ValueError(f"low_res_key {low_res_key!r} is already the image or an extra image")
    if crop_size and not low_res_key:
        raise ValueError(
            "crop_size needs low_res_key: crops are taken of the (image, low_res) pair"
        )


def training_dataset(
    shard_dir: str | os.PathLike[str],
    split: str = "train",
    *,
    image_key: str = "base",
    extra_images: Sequence[str] = (),
    low_res_key: str = "",
    crop_size: int = 0,
    seed: int = 0,
    epoch: int = 0,
    num_epochs: int = 1,
    skip_samples: int = 0,
    skip_corrupt: bool = False,
    verify_sha256: bool = True,
    manifest: dict[str, Any] | None = None,
    tally: Any = None,
    rank: int = 0,
    world_size: int = 1,
) -> Any:
    """A Ray Dataset of training rows in a fixed order for ``(seed, epoch)``; see module doc.

    ``rank`` / ``world_size``: the stream of one of several data-parallel workers (its part of
    every epoch); ``skip_samples`` then counts within that part.

    ``manifest`` (from :func:`read_manifest`) avoids re-reading and re-hashing it; otherwise it
    is read with ``verify_sha256``. ``tally`` (from :func:`corruption_tally`) collects the
    samples dropped with ``skip_corrupt``. ``low_res_key`` adds that image as the ``"low_res"``
    column; ``crop_size`` (high-res pixels, 0 = none) then crops both images alike. Ray must be
    initialised (:func:`pipeline.data.ray_session.init_ray`).
    """
    _check_images(image_key, extra_images, low_res_key, crop_size)
    if manifest is None:
        manifest = read_manifest(shard_dir, verify_sha256=verify_sha256)
    plan = epoch_plan(
        manifest,
        shard_dir,
        split,
        seed=seed,
        epoch=epoch,
        num_epochs=num_epochs,
        skip_samples=skip_samples,
        rank=rank,
        world_size=world_size,
    )
    reader = dict(seed=seed, image_key=image_key, extra_images=tuple(extra_images),
                  skip_corrupt=skip_corrupt, tally=tally, low_res_key=low_res_key,
                  crop_size=int(crop_size))  # fmt: skip
    return _ordered_rows(plan, reader)


def _ordered_rows(plan: list[dict[str, Any]], reader: dict[str, Any]) -> Any:
    """The Ray Dataset reading ``plan`` (one row per shard window) with
    :func:`read_shard_rows` (``reader``: its keyword arguments), in plan order."""

    from pipeline.data.ray_session import configure_data_context

    configure_data_context()
    ds = ray.data.from_items(plan, override_num_blocks=len(plan))
    ds = ds.map_batches(read_shard_rows, batch_size=1, fn_kwargs=reader)
    ds.context.execution_options.preserve_order = True
    return ds


_TOKENIZER_CACHE: dict[str, Any] = {}


def _resolve_tokenizer(tokenizer: Any) -> Any:
    """A Tokenizer from an instance, a name ("clip") or ``{"name": "gpt2", "encoder_json": ...,
    "vocab_bpe": ...}``; names/specs are built once per worker process and cached."""
    if not isinstance(tokenizer, (str, dict)):
        return tokenizer
    spec = {"name": tokenizer} if isinstance(tokenizer, str) else dict(tokenizer)
    cache_key = repr(sorted(spec.items()))
    if cache_key not in _TOKENIZER_CACHE:
        from pipeline.text import get_tokenizer

        name = spec.pop("name")
        _TOKENIZER_CACHE[cache_key] = get_tokenizer(name, **spec)
    return _TOKENIZER_CACHE[cache_key]


def _tokenize(
    batch: dict[str, np.ndarray], *, tokenizer: Any, text_ctx: int, keep_text: bool, tally: Any
):

    from pipeline.text import encode_batch, tokenize_batch

    captions = [str(c) for c in batch["caption"]]
    if tally is None:
        tokens, mask = tokenize_batch(_resolve_tokenizer(tokenizer), captions, text_ctx)
    else:
        encoded = encode_batch(_resolve_tokenizer(tokenizer), captions, text_ctx)
        tokens, mask = encoded.tokens, encoded.mask
        cut = [i for i, truncated in enumerate(encoded.truncated) if truncated]
        if cut:  # waited for, so the stage's summary counts every batch read
            keys = [str(batch["key"][i]) for i in cut]
            ray.get(tally.record.remote([captions[i] for i in cut], text_ctx, keys))
    out = {name: value for name, value in batch.items() if keep_text or value.dtype != object}
    out["tokens"] = tokens.numpy()
    out["mask"] = mask.numpy()
    return out


def tokenize_captions(
    ds: Any,
    tokenizer: Any,
    text_ctx: int,
    *,
    batch_size: int = 256,
    keep_text: bool = True,
    tally: Any = None,
) -> Any:
    """Add ``tokens`` (int64 [text_ctx]) and ``mask`` (bool [text_ctx]) columns, tokenised in
    batches on the workers with ``pipeline.text.tokenize_batch``.

    ``tokenizer`` is a picklable Tokenizer object, or better a spec the workers build (once per
    process) with ``pipeline.text.get_tokenizer``: ``"clip"``, or ``{"name": "gpt2",
    "encoder_json": path, "vocab_bpe": path}``. ``keep_text=False`` drops the string columns
    (caption, key) so ``iter_torch_batches`` needs no collate_fn. Order is kept. Captions longer
    than ``text_ctx`` are truncated: recorded in ``tally`` (from :func:`caption_tally`, one
    summary line for the stage), or without one a CaptionTruncatedWarning per batch."""
    if isinstance(tokenizer, dict) and "name" not in tokenizer:
        raise ValueError("a tokenizer spec dict needs a 'name' key")
    ds = ds.map_batches(
        _tokenize,
        batch_size=batch_size,
        fn_kwargs={
            "tokenizer": tokenizer,
            "text_ctx": int(text_ctx),
            "keep_text": keep_text,
            "tally": tally,
        },
    )
    ds.context.execution_options.preserve_order = True
    return ds


class CollateToTorch(NumpyBatchCollateFn):
    """``iter_torch_batches(collate_fn=CollateToTorch())``: numeric columns -> tensors (copied,
    so they are writable), string columns -> lists of str."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {}
        for name, value in batch.items():
            if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
                out[name] = torch.from_numpy(np.array(value, copy=True))
            else:
                out[name] = [str(v) for v in value]
        return out


collate_to_torch = CollateToTorch()


def corruption_tally() -> Any:
    """A Ray actor counting samples dropped as corrupt: ``ray.get(t.summary.remote())`` ->
    ``{"count": n, "events": [[shard, member, problem, samples], ...]}``."""

    @ray.remote(num_cpus=0)
    class CorruptionTally:
        def __init__(self) -> None:
            self.events: list[tuple[str, str, str, int]] = []

        def record(self, events: list[tuple[str, str, str, int]]) -> None:
            self.events.extend(events)

        def summary(self) -> dict[str, Any]:
            return {"count": sum(e[3] for e in self.events), "events": sorted(self.events)}

    return CorruptionTally.remote()


def caption_tally() -> Any:
    """A Ray actor counting the samples whose caption :func:`tokenize_captions` truncated, each
    once however many epochs read it: ``ray.get(t.summary.remote())`` -> ``(count, line)``,
    the line ("" when none) from ``pipeline.text.TruncationTally.summary``."""

    from pipeline.text import TruncationTally

    @ray.remote(num_cpus=0)
    class CaptionTally:
        def __init__(self) -> None:
            self.tally = TruncationTally()

        def record(self, captions: list[str], text_ctx: int, keys: list[str]) -> None:
            self.tally.add(captions, text_ctx, keys)

        def summary(self) -> tuple[int, str]:
            return self.tally.count, self.tally.summary()

    return CaptionTally.remote()
