"""The Ray Data worker functions of the ``shard`` stage: input references -> encoded samples.

Every function takes a numpy batch of input references (a whole Ray Data block: the sharding
job sizes blocks and runs ``map_batches(batch_size=None)``, which avoids re-bundling small
blocks into few tasks) and yields batches of at most ``chunk_rows`` rows, one output row per
input, in input order, with the columns of :data:`OUTPUT_COLUMNS`: a usable
sample has ``reason == ""`` and its two PNGs (``blank`` when its image is a plain colour), a
skipped input has its ``reason`` (a short stable code) and ``detail``. One row per input is what lets the driver check its accounting.

The work done here (decode, validate, crop and resize, render, PNG-encode) is the CPU-heavy
part; the driver only assigns splits and writes tar files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

OUTPUT_COLUMNS = (
    "source",
    "reason",
    "detail",
    "caption",
    "base_png",
    "hires_png",
    "meta",
    "source_w",
    "source_h",
    "blank",
)
UNEXPECTED_ERROR = "unexpected error"
_DETAIL_MAX = 300


class RowBuffer:
    """Accumulates output rows and turns them into a numpy batch."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in OUTPUT_COLUMNS}

    def __len__(self) -> int:
        return len(self.columns["source"])

    def ok(
        self,
        source: str,
        caption: str,
        base_png: bytes,
        hires_png: bytes,
        meta: dict[str, Any],
        size: tuple[int, int],
        blank: bool = False,
    ) -> None:
        meta_text = json.dumps(meta, sort_keys=True)
        self._add(source, "", "", caption, base_png, hires_png, meta_text, size, blank)

    def skip(self, source: str, reason: str, detail: str = "") -> None:
        self._add(source, reason, detail[:_DETAIL_MAX], "", b"", b"", "{}", (0, 0), False)

    def _add(self, source, reason, detail, caption, base_png, hires_png, meta, size, blank):
        values = (
            source,
            reason,
            detail,
            caption,
            base_png,
            hires_png,
            meta,
            size[0],
            size[1],
            bool(blank),
        )
        for name, value in zip(OUTPUT_COLUMNS, values, strict=True):
            self.columns[name].append(value)

    def take_full(self, chunk_rows: int) -> Iterator[dict[str, np.ndarray]]:
        """Yield (and forget) the buffered rows as one batch once there are ``chunk_rows``."""
        if len(self) >= chunk_rows:
            yield from self.take_rest()

    def take_rest(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield (and forget) whatever is buffered, as one batch."""
        if len(self):
            batch = self.to_batch()
            self.columns = {name: [] for name in OUTPUT_COLUMNS}
            yield batch

    def to_batch(self) -> dict[str, np.ndarray]:
        batch: dict[str, np.ndarray] = {}
        for name, values in self.columns.items():
            if name in ("source_w", "source_h"):
                batch[name] = np.asarray(values, dtype=np.int64)
            elif name == "blank":
                batch[name] = np.asarray(values, dtype=bool)
            else:
                array = np.empty(len(values), dtype=object)
                array[:] = values
                batch[name] = array
        return batch


def _as_str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def synthetic_batch(
    batch: dict[str, np.ndarray],
    *,
    seed: int,
    synthetic: Any,
    base_resolution: int,
    upsample_resolution: int,
    chunk_rows: int = 64,
) -> Iterator[dict[str, np.ndarray]]:
    """Render scenes ``batch["id"]`` at the upsampler resolution; area-average down to base."""
    from pipeline.data.image_prep import downsample, encode_png
    from pipeline.data.synthetic_scenes import generate_sample

    rows = RowBuffer()
    for index in batch["id"]:
        index = int(index)
        image, caption, attributes = generate_sample(index, seed, synthetic, upsample_resolution)
        image = image.convert("RGB")
        base = downsample(image, base_resolution)
        rows.ok(
            f"synthetic:{index}",
            caption,
            encode_png(np.asarray(base, dtype=np.uint8)),
            encode_png(np.asarray(image, dtype=np.uint8)),
            {"attributes": attributes},
            (upsample_resolution, upsample_resolution),
        )
        yield from rows.take_full(chunk_rows)
    yield from rows.take_rest()


def _prepare(rows: RowBuffer, source: str, image: bytes, caption: bytes | None, meta: dict, prep):
    from pipeline.data.image_prep import SkipSample, encode_png, prepare_sample

    try:
        sample = prepare_sample(image, caption, **prep)
    except SkipSample as skip:
        rows.skip(source, skip.reason, skip.detail)
        return
    except Exception as err:  # one odd file must not end a job over millions of inputs
        rows.skip(source, UNEXPECTED_ERROR, f"{type(err).__name__}: {err}")
        return
    rows.ok(
        source,
        sample["caption"],
        encode_png(sample["base"]),
        encode_png(sample["hires"]),
        meta,
        tuple(sample["source_size"]),
        sample["blank"],
    )


def folder_batch(
    batch: dict[str, np.ndarray], *, prep: dict[str, Any], chunk_rows: int = 64
) -> Iterator[dict[str, np.ndarray]]:
    """Image files + captions (rows of :func:`~pipeline.data.sources.list_folder_inputs`)."""
    from pipeline.data.image_prep import MISSING_CAPTION
    from pipeline.data.sources import UNREADABLE_FILE, read_folder_sample

    rows = RowBuffer()
    for path, caption_path, source in zip(
        batch["path"], batch["caption_path"], batch["source"], strict=True
    ):
        path, caption_path, source = _as_str(path), _as_str(caption_path), _as_str(source)
        if not caption_path:
            rows.skip(source, MISSING_CAPTION, f"no {source.rsplit('.', 1)[0]}.txt beside it")
        else:
            try:
                image, caption = read_folder_sample({"path": path, "caption_path": caption_path})
            except OSError as err:
                rows.skip(source, UNREADABLE_FILE, f"{type(err).__name__}: {err}")
            else:
                _prepare(rows, source, image, caption, {}, prep)
        yield from rows.take_full(chunk_rows)
    yield from rows.take_rest()


def tar_listing_batch(batch: dict[str, np.ndarray], *, rows_per_batch: int = 1024):
    """Tar files -> listing rows (see :func:`~pipeline.data.sources.list_tar_samples`)."""
    from pipeline.data.sources import list_tar_samples

    columns = ("tar", "source", "members", "reason", "detail")
    pending: list[dict[str, str]] = []

    def flush() -> dict[str, np.ndarray]:
        out = {}
        for name in columns:
            array = np.empty(len(pending), dtype=object)
            array[:] = [row[name] for row in pending]
            out[name] = array
        pending.clear()
        return out

    for tar, name in zip(batch["tar"], batch["name"], strict=True):
        for row in list_tar_samples(_as_str(tar), _as_str(name)):
            pending.append(row)
            if len(pending) >= rows_per_batch:
                yield flush()
    if pending:
        yield flush()


def _parse_meta(data: bytes | None) -> dict[str, Any]:
    if not data:
        return {}
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return {"source_meta": value} if isinstance(value, dict) else {}


def tar_sample_batch(
    batch: dict[str, np.ndarray], *, prep: dict[str, Any], chunk_rows: int = 64
) -> Iterator[dict[str, np.ndarray]]:
    """Listing rows -> samples: read each member by offset (no extraction), then prepare."""
    rows = RowBuffer()
    handles: dict[str, Any] = {}
    try:
        for tar, source, members, reason, detail in zip(
            batch["tar"],
            batch["source"],
            batch["members"],
            batch["reason"],
            batch["detail"],
            strict=True,
        ):
            tar, source, reason = _as_str(tar), _as_str(source), _as_str(reason)
            if reason:
                rows.skip(source, reason, _as_str(detail))
            else:
                _read_and_prepare(rows, handles, tar, source, _as_str(members), prep)
            yield from rows.take_full(chunk_rows)
        yield from rows.take_rest()
    finally:
        for handle in handles.values():
            handle.close()


def _read_and_prepare(rows: RowBuffer, handles: dict, tar: str, source: str, members: str, prep):
    from pipeline.data.sources import (
        MISSING_IMAGE,
        TRUNCATED_TAR,
        UNREADABLE_TAR,
        TruncatedMemberError,
        read_tar_sample,
    )

    tar_name = source.rsplit(":", 1)[0]
    try:
        handle = handles.get(tar)
        if handle is None:
            handle = handles[tar] = open(tar, "rb")  # noqa: SIM115 (closed by the caller)
        image, caption, meta = read_tar_sample(handle, json.loads(members))
    except KeyError:
        rows.skip(source, MISSING_IMAGE, f"no image member for this key in {tar_name}")
        return
    except OSError as err:
        kind = TRUNCATED_TAR if isinstance(err, TruncatedMemberError) else UNREADABLE_TAR
        rows.skip(source, kind, f"{tar_name}: {type(err).__name__}: {err}")
        return
    _prepare(rows, source, image, caption, _parse_meta(meta), prep)


def prep_kwargs(shard_cfg: Any) -> dict[str, Any]:
    """The keyword arguments of ``prepare_sample`` from the ``shard`` config section."""
    return {
        "base_resolution": int(shard_cfg.base_resolution),
        "upsample_resolution": int(shard_cfg.upsample_resolution),
        "min_image_size": int(shard_cfg.min_image_size),
        "max_aspect_ratio": float(shard_cfg.max_aspect_ratio),
        "max_image_pixels": int(shard_cfg.max_image_pixels),
        "skip_blank": bool(shard_cfg.skip_blank_images),
    }


def iter_columns(batch: dict[str, np.ndarray]) -> Iterator[dict[str, Any]]:
    """The rows of an output batch as dicts (driver side)."""
    n = len(batch["source"])
    for i in range(n):
        yield {name: batch[name][i] for name in OUTPUT_COLUMNS}
