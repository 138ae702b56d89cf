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
