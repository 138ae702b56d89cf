"""Safe handling of tar member names, shared by the img2dataset reader and the shard reader.

Tars are never extracted to disk, but member names still become sample keys and appear in
manifests and logs, so a name that would escape a folder if extracted (absolute, or containing
``..``) is rejected, as are members that are not plain files (symlinks, hard links, devices,
FIFOs, sparse files). Keys follow the WebDataset convention: the member path up to the first dot
of its file name; the rest is the extension (``a/b/0001.base.png`` -> ``a/b/0001``, ``base.png``).
"""

from __future__ import annotations

import re
import tarfile

UNSAFE_MEMBER = "unsafe member path"
NON_REGULAR_MEMBER = "non-regular member"

_DRIVE = re.compile(r"^[A-Za-z]:")


def is_safe_member_name(name: str) -> bool:
    """False for empty, absolute (``/x``, ``\\x``, ``C:x``) names and names containing ``..``."""
    if not name or "\x00" in name or ".." in name:
        return False
    return not (name.startswith(("/", "\\")) or _DRIVE.match(name))


def is_regular_member(member: tarfile.TarInfo) -> bool:
    """A plain file (not a directory, link, device, FIFO or sparse file)."""
    return member.isreg() and not member.issparse()


def normalise_member_name(name: str) -> str:
    """Strip leading ``./`` segments (some tar writers add them)."""
    while name.startswith("./"):
        name = name[2:]
    return name


def split_member_name(name: str) -> tuple[str, str]:
    """``dir/key.ext1.ext2`` -> (``dir/key``, ``ext1.ext2`` lower-cased); no dot -> ext ``""``."""
    name = normalise_member_name(name)
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, ext.lower()


def member_problem(member: tarfile.TarInfo) -> str | None:
    """The skip reason for a member that must not be read, None for a readable plain file.

    Directories are not a problem (they are ignored by callers): check ``member.isdir()`` first.
    """
    if not is_safe_member_name(member.name):
        return UNSAFE_MEMBER
    if not is_regular_member(member):
        return NON_REGULAR_MEMBER
    return None


def member_kind(member: tarfile.TarInfo) -> str:
    """A word for a member's type, for messages (``symlink``, ``device``, ...)."""
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hard link"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "fifo"
    if member.issparse():
        return "sparse file"
    if member.isdir():
        return "directory"
    return "file"
