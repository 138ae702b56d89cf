"""A throw-away copy of the repository with the ci profile, for end-to-end runs of DVC stages."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.repo_copy import copy_repo

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def stage_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell would give `dvc repro`: the venv first on PATH, no
    tracking overrides inherited from the test session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GLIDE_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, timeout: int = 600, quiet: bool = False, **extra: str) -> str:
    """Run ``cmd``; its stdout and stderr (stdout alone with ``quiet``, e.g. for JSON)."""
    done = subprocess.run(
        cmd, cwd=cwd, env=stage_env(**extra), capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
    return done.stdout if quiet else done.stdout + done.stderr


@pytest.fixture(scope="session")
def ci_pipeline(tmp_path_factory):
    """The repository copied with profile ci, after one `dvc repro` of every stage."""
    root = copy_repo(tmp_path_factory.mktemp("repo"))
    log = run([str(BIN / "dvc"), "repro"], root, timeout=1200)
    return root, log


def _first_line(proc: subprocess.Popen, timeout: float, log: Path) -> str:
    """The first line ``proc`` prints, or an error with its log if none comes in time."""
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if selector.select(timeout) and (line := proc.stdout.readline().strip()):
            return line
    proc.kill()
    raise AssertionError(f"the local Ray cluster did not start: {log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def two_node_cluster():
    """The address of a Ray cluster of two nodes of 3 CPUs and a 200 MB object store each,
    started on this machine for the session (tests/integration/local_cluster.py)."""
    import shutil
    import tempfile

    private = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: Ray's sockets live here
    log = private / "cluster.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.local_cluster", "--cpus-per-node", "3"],
        cwd=REPO,
        env=stage_env(RAY_TMPDIR=str(private)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    try:
        yield _first_line(proc, 180, log)
    finally:
        proc.stdin.close()  # the helper shuts its nodes down
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(private, ignore_errors=True)
