"""The ``shard`` stage's library function: inputs -> validated, resized samples -> tar shards.

Data flow::

    input references (indices | file paths | tar listings)      Ray Data dataset, never
        -> map_batches: read, decode, validate, crop/resize,      collected in the driver
           PNG-encode (pipeline.data.shard_tasks)               (CPU work on Ray workers)
        -> iter_batches (preserve_order=True), streamed          driver: split, key, tar
        -> SplitWriter per split -> train/shard-000000.tar ...
        -> manifest.json, last, atomically

Design:

- **Determinism.** Ray Data runs with ``preserve_order=True`` (:func:`init_ray`), so rows come
  back in input order whatever the number of workers or the task timing. The driver numbers
  them (input index), assigns the split (:mod:`pipeline.data.splits`: index range for synthetic
  data, hash of (seed, source) otherwise) and cuts each split's stream into shards of
  ``samples_per_shard``. Shard membership and order depend only on the input order and config;
  the tar writer fixes every header, so the same inputs give byte-identical shards.
- **Cluster operation.** Workers do the heavy work and send the encoded PNGs back through the
  object store; only the driver writes to ``output_dir``. So the workers need to read the inputs
  (same path on every node: a shared file system) but not to see the output folder, which is
  the DVC stage's local output. With ``ray.address`` set the same code runs on the cluster's
  CPUs unchanged. The driver holds one pending shard per split plus the skip records.
- **Atomic, consistent outputs.** The old manifest is removed first, each shard is written to a
  temporary file and renamed, stale shards (and temporary files of killed runs) not in the new
  listing are deleted, and the manifest is written last: when a manifest exists, the folder
  holds exactly the shards it lists.
- **Blank images.** Samples whose image is one plain colour (``image_prep.is_blank``) are
  written and listed in the manifest (``blank_inputs``), or skipped with
  ``shard.skip_blank_images``.
- **Accounting.** Every input yields exactly one row (sample or skip record); the stage checks
  ``inputs == written + skipped``, and for synthetic/folder sources that ``inputs`` equals the
  number of references it listed, and raises :class:`ShardingError` otherwise, or when the
  skipped fraction exceeds ``shard.max_skipped_fraction``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.data import shard_tasks
from pipeline.data.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    shard_config_hash,
    write_manifest,
)
from pipeline.data.ray_session import init_ray
from pipeline.data.shard_writer import (
    SHARD_PATTERN,
    TEMP_PATTERN,
    ShardSample,
    SplitWriter,
)
from pipeline.data.sources import SourceError, list_folder_inputs, list_tar_files
from pipeline.data.splits import SPLITS, hashed_split, synthetic_split

_MAX_BLOCKS = 20_000
_REASONS_SHOWN = 5


class ShardingError(RuntimeError):
    """The shard stage cannot produce a trustworthy dataset (too many skips, bad accounting...)."""


def _num_blocks(num_rows: int, batch_size: int) -> int:
    """Blocks (= Ray tasks) for ``num_rows`` inputs: about 4 per CPU of the cluster, each of
    1 to 16 whole batches. Ray Data costs tens of ms per task, so blocks
    of a single batch are measurably slower (~30% on 2 cores)."""
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    batches_per_block = min(max(math.ceil(num_rows / (4 * cpus * batch_size)), 1), 16)
    return max(1, min(_MAX_BLOCKS, math.ceil(num_rows / (batches_per_block * batch_size))))


def input_dataset(cfg: DictConfig) -> tuple[Any, int | None]:
    """(Ray Dataset of output rows in input order, number of inputs if known in advance)."""
    import ray

    shard = cfg.shard
    batch_size = int(shard.batch_size)
    prep = shard_tasks.prep_kwargs(shard)
    if shard.source == "synthetic":
        total = int(shard.num_samples)
        ds = ray.data.range(total, override_num_blocks=_num_blocks(total, batch_size))
        ds = ds.map_batches(
            shard_tasks.synthetic_batch,
            batch_size=None,
            fn_kwargs={
                "seed": int(cfg.seed),
                "synthetic": OmegaConf.to_object(shard.synthetic),
                "base_resolution": int(shard.base_resolution),
                "upsample_resolution": int(shard.upsample_resolution),
                "chunk_rows": batch_size,
            },
        )
        return ds, total
    if shard.source == "folder":
        refs = list_folder_inputs(shard.input_path)
        if not refs:
            raise ShardingError(f"no image files found under shard.input_path {shard.input_path!r}")
        ds = ray.data.from_items(refs, override_num_blocks=_num_blocks(len(refs), batch_size))
        ds = ds.map_batches(
            shard_tasks.folder_batch,
            batch_size=None,
            fn_kwargs={"prep": prep, "chunk_rows": batch_size},
        )
        return ds, len(refs)
    if shard.source == "webdataset":
        tars = list_tar_files(shard.input_path)
        if not tars:
            raise ShardingError(f"no .tar files found at shard.input_path {shard.input_path!r}")
        ds = ray.data.from_items(tars, override_num_blocks=len(tars))
        # Listing reads tar headers only; the streaming repartition then cuts its rows into
        # blocks of batch_size, so decoding runs in parallel over samples, not over tars.
        ds = ds.map_batches(
            shard_tasks.tar_listing_batch,
            batch_size=1,
            fn_kwargs={"rows_per_batch": batch_size},
        )
        ds = ds.repartition(target_num_rows_per_block=batch_size, strict=True)
        ds = ds.map_batches(
            shard_tasks.tar_sample_batch,
            batch_size=None,
            fn_kwargs={"prep": prep, "chunk_rows": batch_size},
        )
        return ds, None
    raise ShardingError(f"unknown shard.source {shard.source!r}")


def _remove_stale(out_dir: Path, keep: set[Path]) -> list[str]:
    """Delete shard files and temporary files in the split folders that are not in ``keep``."""
    removed = []
    for split in SPLITS:
        folder = out_dir / split
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path in keep:
                continue
            if SHARD_PATTERN.match(path.name) or TEMP_PATTERN.match(path.name):
                path.unlink()
                removed.append(path.relative_to(out_dir).as_posix())
        if not any(folder.iterdir()):
            folder.rmdir()
    return removed


@dataclass
class _Tally:
    """What the driver received: the number of rows (``inputs``), the skip records and their
    reasons, and the inputs whose image is blank."""

    inputs: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)
    blank: list[dict[str, Any]] = field(default_factory=list)

    def next_index(self) -> int:
        """Count one more row; return its input index."""
        self.inputs += 1
        return self.inputs - 1

    def skip(self, index: int, row: dict[str, Any]) -> None:
        """Record a worker's skip row (``reason``, ``detail``) for input ``index``."""
        reason = str(row["reason"])
        self.skipped.append(
            {
                "index": index,
                "source": str(row["source"]),
                "reason": reason,
                "detail": str(row["detail"]),
            }
        )
        self.reasons[reason] += 1


def _skip_summary(tally: _Tally) -> str:
    top = ", ".join(
        f"{reason}: {count}" for reason, count in tally.reasons.most_common(_REASONS_SHOWN)
    )
    first = tally.skipped[0] if tally.skipped else None
    example = f"; first: {first['source']} ({first['reason']}: {first['detail']})" if first else ""
    return f"{top}{example}"


def _check_skip_fraction(tally: _Tally, inputs: int, limit: float) -> None:
    skipped = len(tally.skipped)
    if inputs and skipped / inputs > limit:
        raise ShardingError(
            f"skipped {skipped} of {inputs} inputs ({skipped / inputs:.1%}), more than "
            f"shard.max_skipped_fraction={limit:.1%}: {_skip_summary(tally)}"
        )


def _to_sample(row: dict[str, Any], index: int, split: str) -> ShardSample:
    """A worker's output row -> the sample written, keyed ``{split}-{index:09d}``."""
    caption = str(row["caption"])
    meta = json.loads(str(row["meta"]))
    meta.update(
        {
            "caption": caption,
            "source": str(row["source"]),
            "index": index,
            "split": split,
            "source_size": [int(row["source_w"]), int(row["source_h"])],
        }
    )
    key = f"{split}-{index:09d}"
    return ShardSample(key, bytes(row["base_png"]), bytes(row["hires_png"]), caption, meta)


def build_shards(cfg: DictConfig, run_id: str | None = None) -> dict[str, Any]:
    """Run the shard stage for ``cfg`` (a resolved pipeline config); return the manifest.

    Writes ``<shard.output_dir>/{train,val}/shard-NNNNNN.tar`` and then ``manifest.json``.
    ``run_id`` (the MLflow run of the stage) is recorded in the manifest. Raises
    :class:`ShardingError` for too many skipped inputs, inconsistent accounting or no inputs.
    """
    shard = cfg.shard
    init_ray(cfg.ray)
    out_dir = _output_dir_without_manifest(Path(shard.output_dir))
    ds, expected = _listed_inputs(cfg)
    writers = {
        split: SplitWriter(out_dir / split, int(shard.samples_per_shard)) for split in SPLITS
    }
    tally = _write_samples(ds, cfg, writers, expected)
    _check_totals(tally, writers, expected, cfg)
    _remove_stale(out_dir, {info.path for writer in writers.values() for info in writer.shards})
    manifest = _manifest(cfg, run_id, out_dir, writers, tally)
    write_manifest(out_dir, manifest)
    return manifest


def _output_dir_without_manifest(out_dir: Path) -> Path:
    """Create the output folder; remove its manifest (incomplete until the new one is written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    return out_dir


def _listed_inputs(cfg: DictConfig) -> tuple[Any, int | None]:
    """:func:`input_dataset`, with a source that cannot be listed raised as ShardingError."""
    try:
        return input_dataset(cfg)
    except SourceError as err:
        raise ShardingError(str(err)) from err


def _write_samples(
    ds: Any, cfg: DictConfig, writers: dict[str, SplitWriter], expected: int | None
) -> _Tally:
    """Stream the rows in input order: number each one, record the skipped ones, give each
    sample to its split's writer; flush the writers. Returns the tally of what came back."""
    limit = float(cfg.shard.max_skipped_fraction)
    split_of = _split_rule(cfg)
    tally = _Tally()
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
        for row in shard_tasks.iter_columns(batch):
            index = tally.next_index()
            if row["reason"]:
                tally.skip(index, row)
                if expected is not None:  # fail early once the limit cannot be met any more
                    _check_skip_fraction(tally, expected, limit)
                continue
            split = split_of(index, str(row["source"]))
            writers[split].add(_to_sample(row, index, split))
            if row["blank"]:
                tally.blank.append({"index": index, "source": str(row["source"])})
    for writer in writers.values():
        writer.flush()
    return tally


def _split_rule(cfg: DictConfig) -> Callable[[int, str], str]:
    """``split_of(index, source)``: an index range for synthetic data, else a seeded hash of
    the source."""
    seed, val_fraction = int(cfg.seed), float(cfg.shard.val_fraction)
    if cfg.shard.source == "synthetic":
        total = int(cfg.shard.num_samples)
        return lambda index, source: synthetic_split(index, total, val_fraction)
    return lambda index, source: hashed_split(seed, source, val_fraction)


def _check_totals(
    tally: _Tally, writers: dict[str, SplitWriter], expected: int | None, cfg: DictConfig
) -> None:
    """Raise ShardingError unless every input is accounted for, there was any input, few enough
    were skipped, and some training samples were written."""
    inputs, skipped = tally.inputs, len(tally.skipped)
    written = sum(writer.num_samples for writer in writers.values())
    if expected is not None and inputs != expected:
        raise ShardingError(f"listed {expected} inputs but received {inputs} results from Ray Data")
    if inputs != written + skipped:
        raise ShardingError(
            f"accounting error: {inputs} inputs != {written} written + {skipped} skipped"
        )
    if inputs == 0:
        raise ShardingError(f"no inputs found for shard.source={cfg.shard.source!r}")
    _check_skip_fraction(tally, inputs, float(cfg.shard.max_skipped_fraction))
    if writers["train"].num_samples == 0:
        raise ShardingError(
            f"no training samples written ({inputs} inputs, {skipped} skipped: "
            f"{_skip_summary(tally)})"
        )


def _manifest(
    cfg: DictConfig,
    run_id: str | None,
    out_dir: Path,
    writers: dict[str, SplitWriter],
    tally: _Tally,
) -> dict[str, Any]:
    """The manifest of the shards just written (see :mod:`pipeline.data.manifest`)."""
    shard = cfg.shard
    return {
        "format": MANIFEST_FORMAT,
        "source": str(shard.source),
        "input_path": str(shard.input_path),
        "seed": int(cfg.seed),
        "config_hash": shard_config_hash(cfg),
        "run_id": run_id,
        "resolutions": {
            "base": int(shard.base_resolution),
            "hires": int(shard.upsample_resolution),
        },
        "samples_per_shard": int(shard.samples_per_shard),
        "val_fraction": float(shard.val_fraction),
        "inputs": tally.inputs,
        "written": sum(writer.num_samples for writer in writers.values()),
        "skipped": len(tally.skipped),
        "counts": {split: writer.num_samples for split, writer in writers.items()},
        "splits": {split: split_listing(writer, out_dir) for split, writer in writers.items()},
        "skip_reasons": dict(sorted(tally.reasons.items())),
        "skipped_inputs": tally.skipped,
        "blank_images": len(tally.blank),
        "blank_inputs": tally.blank,
    }


def split_listing(writer: SplitWriter, out_dir: Path) -> dict[str, Any]:
    """A split's manifest entry: its sample count and shards (path, count, SHA-256, size)."""
    return {
        "num_samples": writer.num_samples,
        "shards": [
            {
                "path": info.path.relative_to(out_dir).as_posix(),
                "num_samples": info.num_samples,
                "sha256": info.sha256,
                "bytes": info.size_bytes,
            }
            for info in writer.shards
        ],
    }
