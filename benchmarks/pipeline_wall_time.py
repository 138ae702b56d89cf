"""Wall time and peak memory of the whole pipeline (`dvc repro`) for a profile. Prints ONE JSON
object on stdout.

    python benchmarks/pipeline_wall_time.py --profile mini        # the README's main job
    python benchmarks/pipeline_wall_time.py --profile ci          # CI's miniature

The repository's tracked files are copied into a fresh git repo in a temporary folder (as the
integration tests do), ``params.yaml`` gets the profile, and ``dvc repro`` runs there with a
clean MLflow store. While it runs, the resident memory of the whole process tree under dvc (the
stage processes, the Ray services and Ray's workers) is sampled every ``--interval`` seconds,
and each stage's wall time is taken from the moment dvc announces it to the next announcement.
The machine's load average before and after is printed: figures from a loaded machine are not
timings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.repo_copy import copy_repo  # noqa: E402

STAGE_LINE = re.compile(r"Running stage '([^']+)'")


class TreeMemory(threading.Thread):
    """Samples the summed RSS of a process and all its descendants; keeps the peak."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_bytes = 0
        self.peak_processes = 0
        self.done = threading.Event()

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        if total > self.peak_bytes:
            self.peak_bytes, self.peak_processes = total, len(procs)

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(self.interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--interval", type=float, default=0.5, help="memory sampling period (s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repository")
    parser.add_argument("--log", default="", help="also write dvc's output to this file")
    parser.add_argument(
        "--repo",
        default="",
        help="run `dvc repro` in this existing copy instead of a fresh one (e.g. to finish a "
        "kept run: only the stages that are not up to date run and are timed)",
    )
    args = parser.parse_args()

    if args.repo:
        work, root = None, Path(args.repo).resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix=f"glide-pipeline-{args.profile}-"))
        root = copy_repo(work / "repo", args.profile)
    dvc = str(Path(sys.executable).parent / "dvc")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GLIDE_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    load_before = os.getloadavg()
    started = time.monotonic()
    proc = subprocess.Popen(
        [dvc, "repro"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    memory = TreeMemory(proc.pid, args.interval)
    memory.start()
    stages: dict[str, float] = {}
    current, since = None, started
    log = open(args.log, "w") if args.log else None  # noqa: SIM115 - closed below
    assert proc.stdout is not None
    for line in proc.stdout:
        if log:
            log.write(line)
            log.flush()
        match = STAGE_LINE.search(line)
        if match:
            now = time.monotonic()
            if current:
                stages[current] = round(now - since, 1)
            current, since = match.group(1), now
    returncode = proc.wait()
    finished = time.monotonic()
    if current:
        stages[current] = round(finished - since, 1)
    memory.done.set()
    memory.join()
    if log:
        log.close()
    result = {
        "profile": args.profile,
        "returncode": returncode,
        "wall_s": round(finished - started, 1),
        "wall_min": round((finished - started) / 60, 2),
        "stage_wall_s": stages,
        "peak_rss_mb_process_tree": round(memory.peak_bytes / 2**20, 1),
        "processes_at_peak": memory.peak_processes,
        "machine_memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpus": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "repo": str(root) if args.keep or args.repo else None,
    }
    if work is not None and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    sys.exit(returncode)


if __name__ == "__main__":
    main()
