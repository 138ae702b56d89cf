"""How long a Ray Train run takes around a training function that does nothing but report a
checkpoint: from ``fit()`` to the worker starting, and from the worker's end to ``fit()``
returning, at Ray's default controller health-check interval and at the stages' own
(``pipeline.data.ray_session.RAY_TRAIN_ENV``). Prints one JSON object per interval (medians and
ranges over ``--runs`` fits, seconds).

    python benchmarks/train_fit_overhead.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

INTERVAL_VAR = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def report_once() -> None:
    """Record when the worker starts and ends; report one small checkpoint in between."""
    import ray.train

    start = time.time()
    folder = tempfile.mkdtemp()
    Path(folder, "times.json").write_text(json.dumps({"start": start, "end": time.time()}))
    ray.train.report({"done": 1}, checkpoint=ray.train.Checkpoint.from_directory(folder))


def one_fit(storage: str) -> tuple[float, float]:
    """(seconds from fit() to the worker's start, seconds from its end to fit() returning)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    scaling = ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1.0})
    run = ray.train.RunConfig(name=f"overhead-{time.time_ns()}", storage_path=storage)
    began = time.time()
    result = TorchTrainer(report_once, scaling_config=scaling, run_config=run).fit()
    returned = time.time()
    with result.checkpoint.as_directory() as folder:
        times = json.loads(Path(folder, "times.json").read_text())
    return times["start"] - began, returned - times["end"]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import ray

    from pipeline.data.ray_session import RAY_TRAIN_ENV, init_ray

    storage = tempfile.mkdtemp(prefix="fit-overhead-")
    for label, interval in (("ray default", "2.0"), ("stages", RAY_TRAIN_ENV[INTERVAL_VAR])):
        os.environ[INTERVAL_VAR] = interval  # Ray's processes take it from ray.init's environment
        init_ray(argparse.Namespace(num_cpus=2, object_store_memory_mb=200))
        starts, ends = zip(*(one_fit(storage) for _ in range(args.runs)), strict=True)
        ray.shutdown()
        print(
            json.dumps(
                {
                    "interval": label,
                    "health_check_interval_s": float(interval),
                    "runs": args.runs,
                    "fit_to_worker_start_s": summary(list(starts)),
                    "worker_end_to_fit_return_s": summary(list(ends)),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
