"""WebDataset shards of edit triples (image to edit, instruction, edited image) from the
embedded scenes, for instruction-based editing.

Each sample is ``<key>.source.png``, ``<key>.edited.png``, ``<key>.txt`` (the instruction) and
``<key>.json`` (the edit record and both scenes), read back with
``iter_shard_samples(path, images=("source", "edited"), with_meta=True)``. The split follows the
caption shards' rule (the last ``val_fraction`` of the scene indices is ``val``); training
triples never use a held-out edit combination and validation triples use only those, so
evaluation asks for edits the model has not seen on scenes it has not seen.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.manifest import write_manifest
from pipeline.data.scene_edits import EDIT_KINDS, sample_edit_triple
from pipeline.data.shard_writer import SplitWriter
from pipeline.data.sharding import split_listing
from pipeline.data.splits import synthetic_split

EDIT_MANIFEST_FORMAT = "glide-edit-shards/1"
SPLITS = ("train", "val")
NO_EDIT = "scene allows no edit of the asked kinds"


@dataclass(frozen=True)
class EditSample:
    """One triple as written: key (no dots), the two PNGs, the instruction, the record."""

    key: str
    source_png: bytes
    edited_png: bytes
    instruction: str
    meta: dict[str, Any] = field(default_factory=dict)

    def members(self) -> list[tuple[str, bytes]]:
        meta = json.dumps(self.meta, sort_keys=True, separators=(",", ":"))
        return [
            (f"{self.key}.edited.png", self.edited_png),
            (f"{self.key}.json", meta.encode("utf-8")),
            (f"{self.key}.source.png", self.source_png),
            (f"{self.key}.txt", self.instruction.encode("utf-8")),
        ]


def edit_triple_rows(
    batch: dict[str, np.ndarray],
    *,
    seed: int,
    synthetic: Any,
    resolution: int,
    num_samples: int,
    val_fraction: float,
    kinds: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """Ray Data task: render triples ``batch["id"]`` (``png`` pairs, instruction, record, split;
    ``reason`` non-empty for a scene that allows no edit)."""
    from pipeline.data.image_prep import encode_png
    from pipeline.data.synthetic_scenes import render_scene

    columns: dict[str, list[Any]] = {
        name: [] for name in ("index", "split", "source", "edited", "text", "meta", "reason")
    }
    for index in (int(i) for i in batch["id"]):
        split = synthetic_split(index, num_samples, val_fraction)
        triple = sample_edit_triple(index, seed, synthetic, held_out=split == "val", kinds=kinds)
        before, after, text, edit = triple if triple else ({}, {}, "", {})
        pngs = [
            encode_png(np.asarray(render_scene(scene, resolution), dtype=np.uint8))
            if triple
            else b""
            for scene in (before, after)
        ]
        meta = {"edit": edit, "source_scene": before, "edited_scene": after}
        values = (index, split, pngs[0], pngs[1], text, json.dumps(meta), "" if triple else NO_EDIT)
        for name, value in zip(columns, values, strict=True):
            columns[name].append(value)
    return {name: np.asarray(values, dtype=object) for name, values in columns.items()}


def build_edit_shards(
    out_dir: str | Path,
    *,
    seed: int,
    synthetic: Any,
    num_samples: int,
    val_fraction: float,
    resolution: int,
    samples_per_shard: int,
    kinds: tuple[str, ...] = EDIT_KINDS,
) -> dict[str, Any]:
    """Write ``<out_dir>/{train,val}/shard-NNNNNN.tar`` of ``num_samples`` triples on Ray Data,
    then ``manifest.json`` (counts, shards with SHA-256, the scenes skipped for want of an edit).
    Ray must be running (``init_ray``)."""
    import ray

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writers = {split: SplitWriter(out / split, samples_per_shard) for split in SPLITS}
    ds = ray.data.range(num_samples).map_batches(
        edit_triple_rows,
        batch_size=64,
        fn_kwargs={
            "seed": seed, "synthetic": synthetic, "resolution": resolution,
            "num_samples": num_samples, "val_fraction": val_fraction, "kinds": tuple(kinds),
        },
    )  # fmt: skip
    skipped = []
    for row in _rows_in_order(ds):
        if row["reason"]:
            skipped.append({"index": int(row["index"]), "reason": str(row["reason"])})
            continue
        writers[row["split"]].add(_sample(row))
    for writer in writers.values():
        writer.flush()
    manifest = _edit_manifest(out, writers, skipped, seed, num_samples, resolution, kinds)
    write_manifest(out, manifest)
    return manifest


def _rows_in_order(ds: Any) -> Iterator[dict[str, Any]]:
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for k in range(len(batch["index"])):
            yield {name: column[k] for name, column in batch.items()}


def _sample(row: dict[str, Any]) -> EditSample:
    key = f"{row['split']}-{int(row['index']):09d}"
    meta = json.loads(str(row["meta"]))
    meta.update({"index": int(row["index"]), "split": str(row["split"])})
    return EditSample(key, bytes(row["source"]), bytes(row["edited"]), str(row["text"]), meta)


def _edit_manifest(out: Path, writers, skipped, seed, num_samples, resolution, kinds) -> dict:
    splits = {split: split_listing(writer, out) for split, writer in writers.items()}
    return {
        "format": EDIT_MANIFEST_FORMAT,
        "seed": seed,
        "resolution": resolution,
        "kinds": list(kinds),
        "inputs": num_samples,
        "written": sum(writer.num_samples for writer in writers.values()),
        "counts": {split: writer.num_samples for split, writer in writers.items()},
        "splits": splits,
        "skipped": len(skipped),
        "skipped_inputs": skipped,
    }
