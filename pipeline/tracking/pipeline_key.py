"""Identify one pipeline execution across the separate processes of its stages.

DVC runs each stage as a child process of one ``dvc repro`` (or ``dvc exp run``) process. The
stages of one execution therefore share that ancestor: its pid and start time form a key that no
other execution has. ``GLIDE_PIPELINE_KEY`` in the environment overrides the key (a wrapper script
or scheduler can set it to group stages it runs itself); ``GLIDE_PIPELINE_RUN_ID`` names the
parent MLflow run directly.
"""

from __future__ import annotations

import os
import socket
import uuid

import psutil

_DVC_COMMANDS = ("repro", "exp")


def _is_dvc_pipeline(proc: psutil.Process) -> bool:
    try:
        cmd = proc.cmdline()
    except (psutil.Error, OSError):
        return False
    names = [os.path.basename(part) for part in cmd[:3]]
    is_dvc = any(name == "dvc" or name.startswith("dvc.") for name in names) or (
        len(cmd) > 2 and cmd[1] == "-m" and cmd[2] == "dvc"
    )
    return is_dvc and any(word in cmd for word in _DVC_COMMANDS)


def pipeline_execution_key() -> tuple[str, str]:
    """Return ``(key, origin)``: the execution key and where it came from.

    origin is "env" (GLIDE_PIPELINE_KEY), "dvc" (the ancestor dvc process) or "standalone"
    (a stage run by hand: a fresh key, so it gets a parent run of its own).
    """
    env_key = os.environ.get("GLIDE_PIPELINE_KEY")
    if env_key:
        return env_key, "env"
    try:
        proc: psutil.Process | None = psutil.Process().parent()
        while proc is not None:
            if _is_dvc_pipeline(proc):
                return f"{socket.gethostname()}:{proc.pid}:{proc.create_time():.3f}", "dvc"
            proc = proc.parent()
    except (psutil.Error, OSError):
        pass
    return f"standalone:{uuid.uuid4().hex}", "standalone"
