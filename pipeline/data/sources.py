"""Enumerate the inputs of the ``shard`` stage and read their raw bytes.

Three sources (``shard.source``):

- ``synthetic``: indices ``0 .. num_samples-1``; the scenes are generated inside Ray tasks, the
  driver never holds them (see :mod:`pipeline.data.shard_tasks`).
- ``folder``: every image file (:data:`IMAGE_EXTENSIONS`, any case) below ``input_path``,
  recursively, with a same-stem ``.txt`` caption beside it. Hidden files and folders (leading
  ``.``) are ignored; symlinked folders are not followed. Order: sorted relative POSIX path. An
  image without a caption is still an input: it is skipped later with reason "missing caption".
- ``webdataset``: img2dataset-style ``.tar`` shards (a folder searched recursively, a glob, or
  one file) with members ``{key}.jpg|png|webp|...``, ``{key}.txt``, ``{key}.json``. Tars are read
  with :mod:`tarfile` without extracting anything: the listing records each member's data offset
  and size, and the data is later read by seeking, so any worker can process any sample.

On a Ray cluster the input paths must be readable at the same path on every node (a shared
file system); the driver only lists folder paths (small strings) and tar file names.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.data.tar_members import (
    NON_REGULAR_MEMBER,
    UNSAFE_MEMBER,
    member_kind,
    member_problem,
    normalise_member_name,
    split_member_name,
)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
CAPTION_EXTENSION = "txt"
META_EXTENSION = "json"

# Skip reasons of this module (image_prep defines the per-image ones).
UNREADABLE_TAR = "unreadable tar"
TRUNCATED_TAR = "truncated tar member"
MISSING_IMAGE = "missing image"
UNREADABLE_FILE = "unreadable file"


class SourceError(ValueError):
    """The configured input does not exist or holds nothing usable."""


# ----------------------------------------------------------------------------------- folder


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def list_folder_inputs(root: str | os.PathLike[str]) -> list[dict[str, str]]:
    """One row per image file: ``{"path", "caption_path" ("" if none), "source"}``.

    ``source`` is the path relative to ``root`` (POSIX separators): it names the input in the
    manifest and decides its split, so moving the folder does not change the split.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise SourceError(f"shard.input_path {str(root)!r} is not a folder")
    rows: list[dict[str, str]] = []
    for folder, dirnames, filenames in os.walk(root_path, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        captions: dict[str, str] = {}
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            is_caption = ext.lower() == f".{CAPTION_EXTENSION}" and not _is_hidden(name)
            # prefer the exact lower-case ".txt" when both "a.txt" and "a.TXT" exist
            if is_caption and (stem not in captions or ext == f".{CAPTION_EXTENSION}"):
                captions[stem] = name
        for name in filenames:
            if _is_hidden(name):
                continue
            stem, ext = os.path.splitext(name)
            if ext[1:].lower() not in IMAGE_EXTENSIONS:
                continue
            path = Path(folder) / name
            caption = captions.get(stem)
            rows.append(
                {
                    "path": str(path),
                    "caption_path": str(Path(folder) / caption) if caption else "",
                    "source": path.relative_to(root_path).as_posix(),
                }
            )
    rows.sort(key=lambda row: row["source"])
    return rows


def read_folder_sample(row: dict[str, Any]) -> tuple[bytes, bytes | None]:
    """(image bytes, caption bytes or None when the row has no caption file). OSError passes."""
    image = Path(row["path"]).read_bytes()
    caption_path = row.get("caption_path") or ""
    caption = Path(caption_path).read_bytes() if caption_path else None
    return image, caption


# ------------------------------------------------------------------------------ webdataset

_GLOB_MAGIC = set("*?[")


def _static_prefix(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard (names tars relative to it)."""
    parts = Path(pattern).parts
    static: list[str] = []
    for part in parts:
        if _GLOB_MAGIC & set(part):
            break
        static.append(part)
    return Path(*static) if static else Path(".")


def list_tar_files(input_path: str) -> list[dict[str, str]]:
    """Rows ``{"tar": path, "name": display name}`` sorted by display name.

    ``input_path`` is a folder (``*.tar`` below it, recursively), a glob (``shards/*.tar``,
    ``**`` allowed), or one ``.tar`` file. The display name is relative to the folder, the glob's
    static prefix, or the file's own folder.
    """
    if not input_path:
        raise SourceError("shard.input_path is empty")
    path = Path(input_path)
    if _GLOB_MAGIC & set(input_path):
        base = _static_prefix(input_path)
        files = [Path(p) for p in glob.glob(input_path, recursive=True)]
    elif path.is_dir():
        base = path
        files = [p for p in path.rglob("*") if p.suffix.lower() == ".tar"]
    elif path.is_file():
        base = path.parent
        files = [path]
    else:
        raise SourceError(f"shard.input_path {input_path!r} does not exist")
    rows = []
    for file in files:
        if not file.is_file() or any(_is_hidden(part) for part in file.relative_to(base).parts):
            continue
        rows.append({"tar": str(file), "name": file.relative_to(base).as_posix()})
    rows.sort(key=lambda row: row["name"])
    return rows


def _listing_row(tar: str, source: str, members: str = "", reason: str = "", detail: str = ""):
    return {"tar": tar, "source": source, "members": members, "reason": reason, "detail": detail}


def _end_marker_problem(handle: BinaryIO, offset: int) -> str | None:
    """None when ``offset`` starts tar's end-of-archive zero block, else what is wrong."""
    handle.seek(offset)
    block = handle.read(tarfile.BLOCKSIZE)
    if len(block) < tarfile.BLOCKSIZE:
        return f"no end-of-archive marker at byte {offset} (file ends: truncated)"
    if block.count(0) != len(block):
        return f"unreadable header at byte {offset} (corrupt or truncated)"
    return None


def list_tar_samples(tar_path: str, name: str) -> Iterator[dict[str, str]]:
    """One listing row per sample of an img2dataset tar, or per input that must be skipped.

    Sample rows: ``members`` is a JSON object ``{ext: [member name, data offset, size]}``.
    Skip rows carry ``reason``/``detail``: one per unsafe member name; one per key with a
    non-regular member (symlink, device, ...) or a member whose data runs past the end of the
    file; and, when the tar cannot be read to its end-of-archive marker, one row for the tar
    itself (reason "unreadable tar", the tar named in ``source`` and ``detail``), standing for
    whatever followed the damage, after the samples listed before it. Samples are sorted by key,
    so the order does not depend on the member order inside the tar.
    """
    groups: dict[str, dict[str, list[Any]]] = {}
    damaged: dict[str, tuple[str, str]] = {}
    problems: list[dict[str, str]] = []
    failure: str | None = None
    try:
        size = os.path.getsize(tar_path)
        with open(tar_path, "rb") as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            for member in tar:
                if member.isdir():
                    continue
                problem = member_problem(member)
                if problem == UNSAFE_MEMBER:
                    problems.append(
                        _listing_row(
                            tar_path,
                            f"{name}:{member.name}",
                            "",
                            UNSAFE_MEMBER,
                            f"member {member.name!r} of {name}",
                        )
                    )
                    continue
                member_name = normalise_member_name(member.name)
                key, ext = split_member_name(member_name)
                if problem == NON_REGULAR_MEMBER:
                    detail = f"{member_kind(member)} member {member_name!r} of {name}"
                    damaged.setdefault(key, (NON_REGULAR_MEMBER, detail))
                elif member.offset_data + member.size > size:
                    detail = f"member {member_name!r} of {name} ends past the end of the file"
                    damaged.setdefault(key, (TRUNCATED_TAR, detail))
                else:
                    groups.setdefault(key, {})[ext] = [member_name, member.offset_data, member.size]
            end_problem = _end_marker_problem(handle, tar.offset)
            if end_problem is not None:
                failure = f"{name}: {end_problem}"
    except (tarfile.TarError, EOFError, OSError) as err:
        failure = f"{name}: {type(err).__name__}: {err}"
    yield from problems
    for key in sorted(set(groups) | set(damaged)):
        if key in damaged:
            reason, detail = damaged[key]
            yield _listing_row(tar_path, f"{name}:{key}", "", reason, detail)
        else:
            yield _listing_row(tar_path, f"{name}:{key}", json.dumps(groups[key], sort_keys=True))
    if failure is not None:
        yield _listing_row(tar_path, name, "", UNREADABLE_TAR, failure)


class TruncatedMemberError(OSError):
    """A member's data is shorter than its header says."""


def _read_at(handle: BinaryIO, offset: int, size: int, member: str) -> bytes:
    handle.seek(offset)
    data = handle.read(size)
    if len(data) != size:
        raise TruncatedMemberError(f"member {member!r}: {len(data)} of {size} bytes")
    return data


def pick_image_member(members: dict[str, list[Any]]) -> str | None:
    """The image extension to use for a sample (first of IMAGE_EXTENSIONS present)."""
    for ext in IMAGE_EXTENSIONS:
        if ext in members:
            return ext
    return None


def read_tar_sample(
    handle: BinaryIO, members: dict[str, list[Any]]
) -> tuple[bytes, bytes | None, bytes | None]:
    """(image bytes, caption bytes or None, json bytes or None) of one listed sample.

    Raises KeyError when the sample has no image member, TruncatedMemberError when data is short.
    """
    ext = pick_image_member(members)
    if ext is None:
        raise KeyError("no image member")
    name, offset, size = members[ext]
    image = _read_at(handle, offset, size, name)
    caption = meta = None
    if CAPTION_EXTENSION in members:
        name, offset, size = members[CAPTION_EXTENSION]
        caption = _read_at(handle, offset, size, name)
    if META_EXTENSION in members:
        name, offset, size = members[META_EXTENSION]
        meta = _read_at(handle, offset, size, name)
    return image, caption, meta


__all__ = [
    "CAPTION_EXTENSION",
    "IMAGE_EXTENSIONS",
    "MISSING_IMAGE",
    "NON_REGULAR_MEMBER",
    "TRUNCATED_TAR",
    "UNREADABLE_FILE",
    "UNREADABLE_TAR",
    "UNSAFE_MEMBER",
    "SourceError",
    "list_folder_inputs",
    "list_tar_files",
    "list_tar_samples",
    "pick_image_member",
    "read_folder_sample",
    "read_tar_sample",
]
