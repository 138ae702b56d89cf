"""A throw-away copy of this repository (its sources, no results) as a fresh one-commit git repo:
where the integration tests and the pipeline benchmark run `dvc repro`."""

import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PIPELINE_RESULTS = ("metrics/", "samples/", "plots/", "reports/")  # outputs, not sources


def copy_repo(dest: Path, profile: str = "ci") -> Path:
    """Copy the tracked (and untracked, not ignored) files into a fresh git repo at ``dest``;
    the results of an earlier local `dvc repro` (metrics, plots, ...) stay behind."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in listed:
        if name.startswith(PIPELINE_RESULTS):
            continue
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
