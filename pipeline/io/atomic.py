"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

Every output of the pipeline (shards, manifests, checkpoints, resolved configs, metrics) goes
through these helpers. The data is written to a temporary file in the destination folder, flushed
and fsynced, then renamed over the destination (``os.replace`` is atomic on POSIX within one
filesystem). On any error the temporary file is removed and the previous output stays intact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


class OutputWriteError(OSError):
    """Raised when an output cannot be written (read-only folder, disk full, ...)."""


@contextlib.contextmanager
def atomic_output_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    Use it for writers that want a file name (``torch.save``, ``tarfile.open``). The parent
    folder is created if needed. On failure the temporary file is removed, the destination keeps
    its previous content, and an :class:`OutputWriteError` names the destination.
    """
    dest = Path(path)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
    except OSError as err:
        raise OutputWriteError(
            err.errno, f"cannot write output {dest}: {err.strerror or err}"
        ) from err
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OutputWriteError):
            raise
        raise OutputWriteError(
            err.errno, f"cannot write output {dest}: {err.strerror or err}"
        ) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_output_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))
