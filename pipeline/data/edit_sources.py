"""Users' own edit triples: listing, reading and validating (image to edit, edited image,
instruction), with the caption shards' checks and skip reasons.

Layout, in a folder (searched recursively, hidden files ignored) or in WebDataset tars, one key
per triple::

    <key>.source.<ext>   the image to edit      (<ext>: any of IMAGE_EXTENSIONS, any case)
    <key>.edited.<ext>   the same image, edited (same size as the source)
    <key>.txt            the instruction, UTF-8 ("make the sky pink")

A key without its source image, edited image or instruction, images that do not decode, are
too small, too elongated or differ in size, is skipped with its reason and counted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pipeline.data.image_prep import (
    ASPECT,
    TOO_SMALL,
    SkipSample,
    center_crop_resize,
    decode_caption,
    decode_image,
)
from pipeline.data.sources import (
    CAPTION_EXTENSION,
    IMAGE_EXTENSIONS,
    SourceError,
    TruncatedMemberError,
    _read_at,
)

ROLES = ("source", "edited")
MISSING_SOURCE = "missing source image"
MISSING_EDITED = "missing edited image"
SIZE_MISMATCH = "source and edited sizes differ"


def _role_and_stem(name: str) -> tuple[str, str] | None:
    """'a/b.source.png' -> ('source', 'b'); 'b.txt' -> ('txt', 'b'); anything else None."""
    parts = name.split(".")
    if len(parts) == 2 and parts[1] == CAPTION_EXTENSION:
        return "txt", parts[0]
    if len(parts) == 3 and parts[1] in ROLES and parts[2].lower() in IMAGE_EXTENSIONS:
        return parts[1], parts[0]
    return None


def list_edit_folder(root: str | os.PathLike[str]) -> list[dict[str, str]]:
    """One row per key: ``{"source_path", "edited_path", "txt_path" ("" when absent),
    "name"}``, ``name`` being the key's path relative to ``root`` (it decides the split)."""
    root_path = Path(root)
    if not root_path.is_dir():
        raise SourceError(f"input_path {str(root)!r} is not a folder")
    keys: dict[str, dict[str, str]] = {}
    for folder, dirnames, filenames in os.walk(root_path, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            parsed = None if filename.startswith(".") else _role_and_stem(filename)
            if parsed is None:
                continue
            role, stem = parsed
            name = (Path(folder) / stem).relative_to(root_path).as_posix()
            keys.setdefault(name, {})[f"{role}_path"] = str(Path(folder) / filename)
    return [
        {"name": name, **{f"{r}_path": found.get(f"{r}_path", "") for r in (*ROLES, "txt")}}
        for name, found in sorted(keys.items())
        if any(found.get(f"{r}_path") for r in ROLES)
    ]


def read_folder_triple(row: dict[str, Any]) -> tuple[bytes | None, bytes | None, bytes | None]:
    """(source, edited, instruction) bytes of a listed key; None for a missing file."""
    return tuple(  # type: ignore[return-value]
        Path(str(row[f"{role}_path"])).read_bytes() if row[f"{role}_path"] else None
        for role in (*ROLES, "txt")
    )


def read_tar_triple(
    handle: BinaryIO, members: dict[str, list[Any]]
) -> tuple[bytes | None, bytes | None, bytes | None]:
    """(source, edited, instruction) bytes of one listed tar sample (``{ext: [name, offset,
    size]}``); None for a missing member. TruncatedMemberError when data is short."""

    def member(ext: str | None) -> bytes | None:
        if ext is None or ext not in members:
            return None
        name, offset, size = members[ext]
        return _read_at(handle, int(offset), int(size), name)

    def image_ext(role: str) -> str | None:
        return next((f"{role}.{e}" for e in IMAGE_EXTENSIONS if f"{role}.{e}" in members), None)

    return member(image_ext("source")), member(image_ext("edited")), member(CAPTION_EXTENSION)


def prepare_triple(
    source: bytes | None,
    edited: bytes | None,
    instruction: bytes | None,
    *,
    resolution: int,
    min_image_size: int,
    max_aspect_ratio: float,
    max_image_pixels: int,
) -> dict[str, Any]:
    """Validate a triple and crop both images alike: ``{"source", "edited": uint8 [R, R, 3],
    "instruction", "source_size": [w, h]}``. Raises SkipSample naming what is wrong."""
    if source is None:
        raise SkipSample(MISSING_SOURCE, "no <key>.source.<image> for this key")
    if edited is None:
        raise SkipSample(MISSING_EDITED, "no <key>.edited.<image> for this key")
    text = decode_caption(instruction)
    images = [decode_image(data, max_image_pixels) for data in (source, edited)]
    if images[0].size != images[1].size:
        raise SkipSample(SIZE_MISMATCH, f"source {images[0].size}, edited {images[1].size}")
    width, height = images[0].size
    short, long = min(width, height), max(width, height)
    if short < min_image_size:
        raise SkipSample(TOO_SMALL, f"{width}x{height}: shorter side < {min_image_size}")
    if long / short > max_aspect_ratio:
        raise SkipSample(ASPECT, f"{width}x{height}: {long / short:.2f} > {max_aspect_ratio}")
    crops = [np.asarray(center_crop_resize(im, resolution), dtype=np.uint8) for im in images]
    return {
        "source": crops[0],
        "edited": crops[1],
        "instruction": text,
        "source_size": [width, height],
    }


__all__ = [
    "MISSING_EDITED",
    "MISSING_SOURCE",
    "SIZE_MISMATCH",
    "TruncatedMemberError",
    "list_edit_folder",
    "prepare_triple",
    "read_folder_triple",
    "read_tar_triple",
]
