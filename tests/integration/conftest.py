"""A throw-away copy of the repository with the ci profile, for end-to-end runs of DVC stages."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


def run(cmd: list[str], cwd: Path, timeout: int = 600, **extra: str) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, env=stage_env(**extra), capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
    return done.stdout + done.stderr


def copy_repo(dest: Path, profile: str = "ci") -> Path:
    """Copy the tracked (and untracked, not ignored) files into a fresh git repo at ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in listed:
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["profile"] = profile
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


@pytest.fixture(scope="session")
def ci_pipeline(tmp_path_factory):
    """The repository copied with profile ci, after one `dvc repro` of every stage."""
    root = copy_repo(tmp_path_factory.mktemp("repo"))
    log = run([str(BIN / "dvc"), "repro"], root, timeout=1200)
    return root, log
