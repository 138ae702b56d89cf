"""WebDataset shards of edit triples (image to edit, instruction, edited image), for
instruction-based editing: from the embedded scenes, or from users' own triples
(:mod:`pipeline.data.edit_sources`: a folder or WebDataset tars).

Each sample is ``<key>.source.png``, ``<key>.edited.png``, ``<key>.txt`` (the instruction) and
``<key>.json`` (for scenes: the edit record and both scenes), read back with
``iter_shard_samples(path, images=("source", "edited"), with_meta=True)``. Scenes follow the
caption shards' split (the last ``val_fraction`` of the indices is ``val``); training triples
never use a held-out edit combination and validation triples use only those, so evaluation asks
for edits the model has not seen on scenes it has not seen. Users' triples split by a seeded
hash of their key, as the caption shards do.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.manifest import write_manifest
from pipeline.data.scene_edits import EDIT_KINDS, sample_edit_triple
from pipeline.data.shard_writer import SplitWriter
from pipeline.data.sharding import split_listing
from pipeline.data.sources import SourceError
from pipeline.data.splits import hashed_split, synthetic_split

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


COLUMNS = ("name", "split", "source", "edited", "text", "meta", "reason", "detail")


def _columns(rows: list[tuple]) -> dict[str, np.ndarray]:
    out = {}
    for k, name in enumerate(COLUMNS):
        column = np.empty(len(rows), dtype=object)
        column[:] = [row[k] for row in rows]
        out[name] = column
    return out


def synthetic_triple_rows(
    batch: dict[str, np.ndarray],
    *,
    seed: int,
    synthetic: Any,
    resolution: int,
    num_samples: int,
    val_fraction: float,
    kinds: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """Ray Data task: render triples ``batch["id"]`` of the embedded scenes (a scene that allows
    no edit of ``kinds`` in its split is a skip row)."""
    from pipeline.data.image_prep import encode_png
    from pipeline.data.synthetic_scenes import render_scene

    rows = []
    for index in (int(i) for i in batch["id"]):
        split = synthetic_split(index, num_samples, val_fraction)
        triple = sample_edit_triple(index, seed, synthetic, held_out=split == "val", kinds=kinds)
        if triple is None:
            rows.append((f"synthetic:{index}", split, b"", b"", "", "{}", NO_EDIT, ""))
            continue
        before, after, text, edit = triple
        pngs = [
            encode_png(np.asarray(render_scene(s, resolution), np.uint8)) for s in (before, after)
        ]
        meta = json.dumps({"edit": edit, "source_scene": before, "edited_scene": after})
        rows.append((f"synthetic:{index}", split, *pngs, text, meta, "", ""))
    return _columns(rows)


def own_triple_rows(
    batch: dict[str, np.ndarray], *, kind: str, seed: int, val_fraction: float, prep: dict
) -> dict[str, np.ndarray]:
    """Ray Data task: read and validate users' triples, listed by :func:`list_edit_folder`
    (``kind="folder"``) or by ``list_tar_samples`` (``kind="webdataset"``)."""
    from pipeline.data.edit_sources import prepare_triple, read_folder_triple, read_tar_triple
    from pipeline.data.image_prep import SkipSample, encode_png
    from pipeline.data.sources import UNREADABLE_FILE

    rows = []
    for k in range(len(next(iter(batch.values())))):
        row = {name: column[k] for name, column in batch.items()}
        name = str(row["name"] if kind == "folder" else row["source"])
        split = hashed_split(seed, name, val_fraction)
        try:
            if kind == "webdataset" and str(row["reason"]):
                raise SkipSample(str(row["reason"]), str(row["detail"]))
            if kind == "folder":
                data = read_folder_triple(row)
            else:
                with open(str(row["tar"]), "rb") as handle:
                    data = read_tar_triple(handle, json.loads(str(row["members"])))
            triple = prepare_triple(*data, **prep)
        except SkipSample as skip:
            rows.append((name, split, b"", b"", "", "{}", skip.reason, skip.detail))
            continue
        except OSError as err:
            rows.append(
                (name, split, b"", b"", "", "{}", UNREADABLE_FILE, f"{type(err).__name__}: {err}")
            )
            continue
        meta = json.dumps({"source_size": triple["source_size"]})
        pngs = [encode_png(triple[role]) for role in ("source", "edited")]
        rows.append((name, split, *pngs, triple["instruction"], meta, "", ""))
    return _columns(rows)


def triple_dataset(
    source: str, input_path: str, settings: dict[str, Any]
) -> tuple[Any, int | None]:
    """(Ray Dataset of triple rows in input order, number of inputs if known)."""
    import ray

    from pipeline.data.edit_sources import list_edit_folder
    from pipeline.data.sources import list_tar_files, list_tar_samples

    if source == "synthetic":
        total = int(settings["num_samples"])
        kwargs = {
            k: settings[k]
            for k in ("seed", "synthetic", "resolution", "num_samples", "val_fraction", "kinds")
        }
        return ray.data.range(total).map_batches(
            synthetic_triple_rows, batch_size=64, fn_kwargs=kwargs
        ), total
    common = {
        "kind": source,
        "seed": settings["seed"],
        "val_fraction": settings["val_fraction"],
        "prep": settings["prep"],
    }
    if source == "folder":
        listed = list_edit_folder(input_path)
    elif source == "webdataset":
        listed = [
            row
            for tar in list_tar_files(input_path)
            for row in list_tar_samples(tar["tar"], tar["name"])
        ]
    else:
        raise ValueError(f"unknown edit source {source!r}: synthetic, folder or webdataset")
    if not listed:
        raise SourceError(f"no edit triples found at {input_path!r}")
    ds = ray.data.from_items(listed).map_batches(own_triple_rows, batch_size=64, fn_kwargs=common)
    return ds, len(listed)


def build_edit_shards(
    out_dir: str | Path,
    *,
    seed: int,
    val_fraction: float,
    resolution: int,
    samples_per_shard: int,
    source: str = "synthetic",
    input_path: str = "",
    synthetic: Any = None,
    num_samples: int = 0,
    kinds: tuple[str, ...] = EDIT_KINDS,
    min_image_size: int = 64,
    max_aspect_ratio: float = 2.0,
    max_image_pixels: int = 89_478_485,
    max_skipped_fraction: float = 0.1,
) -> dict[str, Any]:
    """Write ``<out_dir>/{train,val}/shard-NNNNNN.tar`` of triples on Ray Data, then
    ``manifest.json`` (counts, shards with SHA-256, every skipped input with its reason).

    ``source``: ``synthetic`` (``num_samples`` triples of the embedded scenes), ``folder`` or
    ``webdataset`` (users' triples at ``input_path``, see :mod:`pipeline.data.edit_sources`).
    Raises ValueError when more than ``max_skipped_fraction`` of the inputs are skipped.
    Ray must be running (``init_ray``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prep = {"resolution": resolution, "min_image_size": min_image_size,
            "max_aspect_ratio": max_aspect_ratio, "max_image_pixels": max_image_pixels}  # fmt: skip
    settings = {"seed": seed, "synthetic": synthetic, "resolution": resolution, "prep": prep,
                "num_samples": num_samples, "val_fraction": val_fraction, "kinds": tuple(kinds)}  # fmt: skip
    ds, inputs = triple_dataset(source, input_path, settings)
    writers = {split: SplitWriter(out / split, samples_per_shard) for split in SPLITS}
    skipped = []
    for index, row in enumerate(_rows_in_order(ds)):
        if row["reason"]:
            skipped.append({"index": index, "source": str(row["name"]),
                            "reason": str(row["reason"]), "detail": str(row["detail"])})  # fmt: skip
            continue
        writers[str(row["split"])].add(_sample(row, index))
    for writer in writers.values():
        writer.flush()
    if inputs and len(skipped) > max_skipped_fraction * inputs:
        reasons = Counter(row["reason"] for row in skipped)
        raise ValueError(
            f"skipped {len(skipped)} of {inputs} edit triples, more than max_skipped_fraction="
            f"{max_skipped_fraction:.0%}: {dict(reasons)}"
        )
    manifest = _edit_manifest(out, writers, skipped, seed, inputs or 0, resolution, kinds)
    manifest.update({"source": source, "input_path": input_path})
    write_manifest(out, manifest)
    return manifest


def _rows_in_order(ds: Any) -> Iterator[dict[str, Any]]:
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for k in range(len(batch["name"])):
            yield {name: column[k] for name, column in batch.items()}


def _sample(row: dict[str, Any], index: int) -> EditSample:
    key = f"{row['split']}-{index:09d}"
    meta = json.loads(str(row["meta"]))
    meta.update({"index": index, "split": str(row["split"]), "source": str(row["name"])})
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
        "skip_reasons": dict(sorted(Counter(row["reason"] for row in skipped).items())),
        "skipped_inputs": skipped,
    }
