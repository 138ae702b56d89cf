"""Read the shards written by :mod:`pipeline.data.shard_writer`, safely and with clear errors.

Shards are streamed with :mod:`tarfile` (mode ``r|``: sequential, no seeking, nothing
extracted). Members are grouped by key (the writer stores a sample's members contiguously).
Damage is reported as :class:`CorruptShardError` naming the shard and the member: a truncated
tar, an unsafe or non-regular member, a sample missing a member, an undecodable PNG or caption,
and (given the manifest's count) a shard that ends early on a member boundary, which ``tarfile``
alone cannot tell from a normal end. With ``skip_corrupt=True`` the damaged samples are skipped
and counted in a :class:`CorruptionCounter` instead.
"""

from __future__ import annotations

import logging
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.data.manifest import ManifestError, read_manifest  # noqa: F401 (re-exported)
from pipeline.data.tar_members import member_kind, member_problem, split_member_name

IMAGE_MEMBERS = {  # caption shards: base, hires; edit triples: source, edited
    "base": "base.png",
    "hires": "hires.png",
    "source": "source.png",
    "edited": "edited.png",
}
CAPTION_MEMBER = "txt"
META_MEMBER = "json"

logger = logging.getLogger(__name__)


class CorruptShardError(RuntimeError):
    """A shard is damaged; ``shard`` and ``member`` say where."""

    def __init__(self, shard: str, member: str, problem: str) -> None:
        super().__init__(shard, member, problem)
        self.shard, self.member, self.problem = shard, member, problem

    def __str__(self) -> str:
        return f"corrupt shard {self.shard}: member {self.member}: {self.problem}"


@dataclass
class CorruptionCounter:
    """How many samples were skipped as corrupt, and where (``events``: shard, member, problem,
    number of samples lost)."""

    count: int = 0
    events: list[tuple[str, str, str, int]] = field(default_factory=list)

    def record(self, error: CorruptShardError, samples: int = 1) -> None:
        self.count += samples
        self.events.append((error.shard, error.member, error.problem, samples))


@dataclass
class RawSample:
    """The members of one sample, undecoded: ``{ext: (member name, bytes)}``."""

    key: str
    members: dict[str, tuple[str, bytes]]


def iter_raw_samples(
    tar_path: str | os.PathLike[str],
    on_corrupt: Any,
    *,
    expected_samples: int | None = None,
) -> Iterator[RawSample]:
    """Stream the samples of a shard, undecoded. ``on_corrupt(error, samples_lost)`` is called
    for each problem (it raises to stop, or returns to skip)."""
    shard = str(tar_path)
    seen = 0
    key: str | None = None
    members: dict[str, tuple[str, bytes]] = {}
    current = "<tar header>"
    try:
        with tarfile.open(shard, mode="r|") as tar:
            for member in tar:
                current = member.name
                if member.isdir():
                    continue
                problem = member_problem(member)
                if problem is not None:
                    on_corrupt(
                        CorruptShardError(shard, member.name, f"{problem} ({member_kind(member)})"),
                        0,
                    )
                    continue
                member_key, ext = split_member_name(member.name)
                if member_key != key:
                    if key is not None:
                        yield RawSample(key, members)
                    key, members, seen = member_key, {}, seen + 1
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                if len(data) != member.size:
                    raise tarfile.ReadError(f"{len(data)} of {member.size} bytes")
                members[ext] = (member.name, data)
    except (tarfile.TarError, EOFError, OSError, ValueError) as err:
        yielded = seen - 1 if key is not None else seen
        lost = max(1, expected_samples - yielded) if expected_samples is not None else 1
        on_corrupt(CorruptShardError(shard, current, f"truncated or unreadable tar: {err}"), lost)
        return  # nothing after the damage can be trusted
    if key is not None:
        yield RawSample(key, members)
    if expected_samples is not None and seen < expected_samples:
        on_corrupt(
            CorruptShardError(
                shard,
                "<end of archive>",
                f"truncated: {seen} samples found, the manifest lists {expected_samples}",
            ),
            expected_samples - seen,
        )


def decode_sample(
    shard: str, raw: RawSample, images: Sequence[str] = ("base",), with_meta: bool = False
) -> dict[str, Any]:
    """Decode the wanted images (uint8 HWC) and the caption; CorruptShardError otherwise."""
    import json

    from pipeline.data.image_prep import decode_png

    out: dict[str, Any] = {"key": raw.key}
    wanted = [(name, IMAGE_MEMBERS[name]) for name in images] + [("caption", CAPTION_MEMBER)]
    if with_meta:
        wanted.append(("meta", META_MEMBER))
    for name, ext in wanted:
        if ext not in raw.members:
            raise CorruptShardError(shard, f"{raw.key}.{ext}", "missing member")
        member, data = raw.members[ext]
        try:
            if name == "caption":
                out[name] = data.decode("utf-8")
            elif name == "meta":
                out[name] = json.loads(data.decode("utf-8"))
            else:
                out[name] = decode_png(data)
        except Exception as err:
            what = "PNG" if ext.endswith("png") else ext
            raise CorruptShardError(shard, member, f"undecodable {what}: {err}") from err
    return out


def iter_shard_samples(
    tar_path: str | os.PathLike[str],
    skip_corrupt: bool = False,
    counter: CorruptionCounter | None = None,
    *,
    images: Sequence[str] = ("base",),
    with_meta: bool = False,
    expected_samples: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield ``{"key", "caption", <each of images>: uint8 HWC[, "meta"]}`` in shard order.

    ``images`` picks which of ``"base"`` / ``"hires"`` to decode. ``expected_samples`` (the
    manifest's count) also catches a shard cut on a member boundary. Raises
    :class:`CorruptShardError` naming shard and member, unless ``skip_corrupt``: then damaged
    samples are skipped, counted in ``counter`` and logged.
    """
    for name in images:
        if name not in IMAGE_MEMBERS:
            raise ValueError(f"unknown image {name!r}; expected one of {sorted(IMAGE_MEMBERS)}")
    counter = counter if counter is not None else CorruptionCounter()
    shard = str(tar_path)

    def on_corrupt(error: CorruptShardError, samples: int) -> None:
        if not skip_corrupt:
            raise error
        counter.record(error, samples)
        logger.warning("skipping %d sample(s): %s", samples, error)

    for raw in iter_raw_samples(shard, on_corrupt, expected_samples=expected_samples):
        try:
            yield decode_sample(shard, raw, images, with_meta)
        except CorruptShardError as error:
            on_corrupt(error, 1)
