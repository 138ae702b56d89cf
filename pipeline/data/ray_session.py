"""Start (or join) Ray once per process, and make Ray Data deterministic and quiet.

``init_ray`` is idempotent: when Ray is already initialised (a test session, a Ray Train worker,
a stage that already called it) it only re-applies the Ray Data settings. With ``ray.address``
set it joins that cluster and ships the ``pipeline`` package to the workers (``py_modules``), so
cluster nodes need the dependencies but not this source tree.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

# Ray Train settings for every stage, read by its controller (which gets them from the driver's
# environment): prints stay prints (Ray Train would route each one through logging, doubling every
# line on the console), and no preemption watcher. The watcher only logs node drains for Ray
# Train's own elastic restarts, which our stages turn off (a failed worker fails the stage); Ray
# starts it as a restartable actor with its arguments in the object store, and the core worker
# logs an error line about exactly that at every training run. The controller polls its workers
# every health-check interval and sees a finished run only at a poll: at Ray's 2 s each run ends
# ~5 s after its workers do, at 0.25 s ~1 s (benchmarks/train_fit_overhead.py); a poll is one
# tiny call per worker, and one a busy worker misses counts as running.
RAY_TRAIN_ENV = {
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
}

_QUIET_LOGGERS = {
    # "Progress bars disabled" and "execution finished" lines, once per dataset run.
    "ray.data._internal.progress": logging.ERROR,
    "ray.data._internal.execution.streaming_executor": logging.WARNING,
    "ray.data": logging.WARNING,
}


def configure_data_context() -> Any:
    """Deterministic, quiet Ray Data: ``preserve_order`` on, no progress bars. Returns the
    current DataContext (datasets copy it when created, so call this before building one)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.execution_options.verbose_progress = False
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    for name, level in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    return ctx


def init_ray(ray_cfg: Any) -> None:
    """Start a local Ray with ``num_cpus`` / ``object_store_memory_mb``, or join ``address``."""
    import ray

    for name, value in RAY_TRAIN_ENV.items():
        os.environ.setdefault(name, value)  # a value the user exported wins
    if not ray.is_initialized():
        quiet: dict[str, Any] = {
            "log_to_driver": True,  # training progress and worker errors reach the console
            "logging_level": logging.WARNING,
            "configure_logging": True,
            # Ray's own loggers in worker processes: errors only. Ray Train's placement-group
            # cleaner otherwise warns every second that the State API (it needs the dashboard,
            # which we do not start) is unavailable. Our progress lines are prints.
            "logging_config": ray.LoggingConfig(encoding="TEXT", log_level="ERROR"),
        }
        address = str(getattr(ray_cfg, "address", "") or "")
        if address:  # an existing cluster owns its resources and dashboard
            import pipeline

            package = Path(pipeline.__file__).resolve().parent
            runtime_env = {
                "py_modules": [str(package)],
                "env_vars": {name: os.environ[name] for name in RAY_TRAIN_ENV},
            }
            ray.init(address=address, runtime_env=runtime_env, **quiet)
        else:
            ray.init(
                address="local",  # not a cluster that `ray start` or RAY_ADDRESS left around
                num_cpus=int(ray_cfg.num_cpus),
                object_store_memory=int(ray_cfg.object_store_memory_mb) * 1024 * 1024,
                include_dashboard=bool(getattr(ray_cfg, "include_dashboard", False)),
                **quiet,
            )
    configure_data_context()


def raise_priority() -> None:
    """Run a training or evaluation worker at normal priority (Ray starts workers at nice 15).

    Ray's service actors and Ray Data's decoding tasks stay at nice 15, so on a small machine
    they yield to training instead of the other way round (measured on 2 cores, mini profile:
    7.8 img/s at nice 15, 21.6 img/s at nice 0). Lowering niceness needs privileges; without
    them the worker keeps Ray's default.
    """
    task_dir = Path("/proc/self/task")  # Linux niceness is per thread: set every thread's
    threads = [int(tid) for tid in os.listdir(task_dir)] if task_dir.is_dir() else [0]
    try:
        for tid in threads:
            os.setpriority(os.PRIO_PROCESS, tid, 0)
    except (PermissionError, ProcessLookupError, OSError):
        print("note: cannot raise the training worker's priority (needs CAP_SYS_NICE)", flush=True)
