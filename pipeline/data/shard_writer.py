"""Deterministic WebDataset tar writer.

A shard is a plain (uncompressed) POSIX ustar archive, readable by tarfile, GNU tar and
WebDataset. Per sample, in this order: ``{key}.base.png``,
``{key}.hires.png``, ``{key}.json``, ``{key}.txt``; samples sorted by key. Every header is fixed
(mtime 0, uid/gid 0, empty user/group names, mode 0o644), the JSON has sorted keys, so the same
samples always give a byte-identical file. Each shard is written to a temporary file beside its
final name and renamed when complete (:func:`pipeline.io.atomic_output_path`): a killed job never
leaves a partial shard under a final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.io import atomic_output_path

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
MEMBER_SUFFIXES = ("base.png", "hires.png", "json", "txt")
SHARD_NAME = "shard-{:06d}.tar"
SHARD_PATTERN = re.compile(r"^shard-\d{6,}\.tar$")
TEMP_PATTERN = re.compile(r"^\.shard-\d{6,}\.tar\..*\.tmp$")  # atomic_output_path's temp names


@dataclass(frozen=True)
class ShardSample:
    """One sample as written: key (no dots), two PNGs, caption, JSON-able metadata."""

    key: str
    base_png: bytes
    hires_png: bytes
    caption: str
    meta: dict[str, Any] = field(default_factory=dict)

    def members(self) -> list[tuple[str, bytes]]:
        meta = json.dumps(self.meta, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return [
            (f"{self.key}.base.png", self.base_png),
            (f"{self.key}.hires.png", self.hires_png),
            (f"{self.key}.json", meta.encode("utf-8")),
            (f"{self.key}.txt", self.caption.encode("utf-8")),
        ]


@dataclass(frozen=True)
class ShardInfo:
    path: Path
    num_samples: int
    sha256: str
    size_bytes: int


def check_key(key: str) -> str:
    if not KEY_PATTERN.match(key):
        raise ValueError(f"invalid sample key {key!r}: use 1-80 characters from [A-Za-z0-9_-]")
    return key


BLOCK = 512
RECORD = 20 * BLOCK  # tar pads the archive to whole records, as tarfile and GNU tar do


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\x00" % (width - 1, value)


def ustar_header(name: str, size: int) -> bytes:
    """The 512-byte ustar header of a plain file with the fixed fields of every shard member.

    Written by hand rather than by :mod:`tarfile` (byte-identical to its USTAR_FORMAT output,
    checked by a test): 5x faster, which matters because the driver writes every member, and
    independent of the Python version's tarfile.
    """
    raw = name.encode("ascii")
    if len(raw) > 100:
        raise ValueError(f"member name longer than 100 bytes: {name!r}")
    header = bytearray(BLOCK)
    header[0 : len(raw)] = raw
    header[100:108] = _octal(0o644, 8)  # mode
    header[108:116] = _octal(0, 8)  # uid
    header[116:124] = _octal(0, 8)  # gid
    header[124:136] = _octal(size, 12)
    header[136:148] = _octal(0, 12)  # mtime
    header[148:156] = b" " * 8  # checksum placeholder
    header[156:157] = tarfile.REGTYPE
    header[257:265] = tarfile.POSIX_MAGIC  # "ustar\0" + version "00"; uname/gname empty
    # devmajor/devminor (329:345) stay NUL for a plain file, as tarfile writes them
    header[148:155] = b"%06o\x00" % sum(header)
    return bytes(header)


def write_shard(path: str | os.PathLike[str], samples: Iterable[ShardSample]) -> ShardInfo:
    """Write ``samples`` (sorted by key here) to the tar ``path`` atomically; return its info."""
    ordered = sorted(samples, key=lambda sample: sample.key)
    for sample in ordered:
        check_key(sample.key)
    for previous, current in zip(ordered, ordered[1:], strict=False):
        if previous.key == current.key:
            raise ValueError(f"duplicate sample key {current.key!r} in shard {path}")
    digest = hashlib.sha256()
    size = 0
    with atomic_output_path(path) as tmp, open(tmp, "wb") as handle:

        def put(data: bytes) -> None:
            nonlocal size
            handle.write(data)
            digest.update(data)
            size += len(data)

        for sample in ordered:
            for name, data in sample.members():
                put(ustar_header(name, len(data)))
                put(data)
                if len(data) % BLOCK:
                    put(bytes(BLOCK - len(data) % BLOCK))
        put(bytes(2 * BLOCK))  # end-of-archive marker
        if size % RECORD:
            put(bytes(RECORD - size % RECORD))
    return ShardInfo(Path(path), len(ordered), digest.hexdigest(), size)


class SplitWriter:
    """Cuts one split's sample stream into shards of ``samples_per_shard``, in arrival order.

    Holds at most one shard's samples in memory. ``shards`` lists what was written.
    """

    def __init__(self, folder: str | os.PathLike[str], samples_per_shard: int) -> None:
        if samples_per_shard <= 0:
            raise ValueError("samples_per_shard must be positive")
        self.folder = Path(folder)
        self.samples_per_shard = samples_per_shard
        self.shards: list[ShardInfo] = []
        self._pending: list[ShardSample] = []

    @property
    def num_samples(self) -> int:
        return sum(info.num_samples for info in self.shards) + len(self._pending)

    def add(self, sample: ShardSample) -> None:
        self._pending.append(sample)
        if len(self._pending) >= self.samples_per_shard:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        path = self.folder / SHARD_NAME.format(len(self.shards))
        self.shards.append(write_shard(path, self._pending))
        self._pending = []
