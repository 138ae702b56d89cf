"""The git commit and dirty flag of the code that runs, for run tags."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state(cwd: str | Path = ".") -> dict[str, str]:
    """Return ``{"git_commit": sha or "unknown", "git_dirty": "true"|"false"|"unknown"}``.

    Dirty means tracked files differ from the commit (untracked files and DVC outputs do not
    count: they are git-ignored or not code).
    """
    where = Path(cwd)
    commit = _git(["rev-parse", "HEAD"], where)
    if not commit:
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    status = _git(["status", "--porcelain", "--untracked-files=no"], where)
    dirty = "unknown" if status is None else ("true" if status else "false")
    return {"git_commit": commit, "git_dirty": dirty}
