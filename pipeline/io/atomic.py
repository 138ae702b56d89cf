"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

Every output of the pipeline (shards, manifests, checkpoints, resolved configs, metrics) goes
through these helpers. The data is written to a temporary file in the destination folder, flushed
and fsynced, then renamed over the destination (``os.replace`` is atomic on POSIX within one
filesystem). On any error the temporary file is removed and the previous output stays intact.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM)


class OutputWriteError(OSError):
    """Raised when an output cannot be written (read-only folder, disk full, ...).

    ``errno`` is the cause's error number, ``filename`` the output's path; the message names
    both in words.
    """

    def __init__(self, code: int | None, message: str, path: str | os.PathLike[str]) -> None:
        super().__init__(code, message, str(path))

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple:  # picklable (Ray sends a worker's exception to the driver)
        return (type(self), (self.errno, self.strerror, self.filename))


def _blocking_file(dest: Path) -> Path | None:
    """The nearest ancestor of ``dest`` that exists but is not a folder, if any."""
    for parent in dest.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _write_error(dest: Path, err: OSError) -> OutputWriteError:
    """An OutputWriteError for ``err`` that names ``dest`` and the cause in words."""
    code = err.errno
    reason = err.strerror or str(err)
    if code == errno.ENOSPC:
        message = f"no space left on device writing {dest}"
    elif code == errno.EDQUOT:
        message = f"no space left on device writing {dest} ({reason})"
    elif code == errno.EROFS:
        message = f"cannot write {dest}: read-only file system"
    elif code in _NOT_WRITABLE:
        message = f"cannot write {dest}: read-only or not writable by this user ({reason})"
    elif code in (errno.ENOTDIR, errno.EEXIST) and _blocking_file(dest) is not None:
        message = f"cannot write {dest}: {_blocking_file(dest)} is a file, not a folder"
    elif code == errno.EISDIR:
        message = f"cannot write {dest}: a folder of that name is in the way"
    else:
        message = f"cannot write {dest}: {reason}"
    return OutputWriteError(code, message, dest)


def _filesystem_cause(folder: Path) -> int | None:
    """ENOSPC or EROFS when ``folder``'s file system is full or read-only, else None.

    Some writers (``torch.save``) turn the OS error into a RuntimeError whose text says
    nothing useful ("unexpected pos 576 vs 534"); this recovers the cause.
    """
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    if stats.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if stats.f_bavail == 0:
        return errno.ENOSPC
    return None


def _release_space(err: BaseException) -> None:
    """Let a failed writer's open handle on the (unlinked) temp file go, so the space returns.

    ``torch.save`` keeps its file open in the frames of the failed call (kept alive by the
    exception's traceback); clearing those finished frames closes it.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__


@contextlib.contextmanager
def atomic_output_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    Use it for writers that want a file name (``torch.save``, ``tarfile.open``). The parent
    folder is created if needed. On failure the temporary file is removed, the destination keeps
    its previous content, and an :class:`OutputWriteError` names the destination and the cause
    (no space left, read-only, a file where a folder should be, ...).
    """
    dest = Path(path)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
    except OSError as err:
        raise _write_error(dest, err) from err
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except OutputWriteError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in _NO_SPACE:
            _release_space(err)
        raise _write_error(dest, err) from err
    except Exception as err:
        cause = _filesystem_cause(dest.parent)  # checked while the temp file still holds space
        tmp.unlink(missing_ok=True)
        if cause is None:
            raise
        if cause == errno.ENOSPC:
            _release_space(err)
        raise _write_error(dest, OSError(cause, os.strerror(cause))) from err
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
