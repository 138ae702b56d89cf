"""Whether a Ray cluster can run a stage's workers without starving their input pipeline, and the
time limit on every wait for cluster resources.

A Ray Train worker holds ``cpus_per_worker`` CPUs (and a GPU with ``use_gpu``) for the whole run;
the Ray Data tasks that read and decode its input need CPUs of their own. On a cluster where the
workers take every CPU, those tasks never start and training waits forever for its first batch.
:func:`require_capacity` refuses such a stage before any work, with an error naming the settings
to change; on a remote cluster (``ray.address``, which may be autoscaling) it first waits up to
``ray.resource_timeout_s`` for the resources to appear.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

INPUT_CPUS_PER_STREAM = 1  # a Ray Data task needs one CPU; each worker's stream needs one task
POLL_SECONDS = 2.0
WORKER_GROUP_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"


class InsufficientResourcesError(RuntimeError):
    """The Ray cluster cannot run a stage as configured (names the settings to change)."""


@dataclass(frozen=True)
class Demand:
    """What a stage asks of the cluster: ``num_workers`` workers of ``cpus_per_worker`` CPUs
    (and one GPU each with ``use_gpu``), plus CPUs for ``input_streams`` Ray Data streams."""

    section: str
    num_workers: int
    cpus_per_worker: float
    use_gpu: bool
    input_streams: int

    @property
    def worker_cpus(self) -> float:
        return self.num_workers * self.cpus_per_worker

    @property
    def cpus(self) -> float:
        return self.worker_cpus + self.input_streams * INPUT_CPUS_PER_STREAM


def training_demand(section: str, train: Any) -> Demand:
    """A training stage: one input stream per worker (see ``pipeline.data.train_input``)."""
    workers = int(train.num_workers)
    return Demand(section, workers, float(train.cpus_per_worker), bool(train.use_gpu), workers)


def evaluation_demand(section: str, settings: Any) -> Demand:
    """The evaluate stage: one input stream, split between its workers."""
    return Demand(
        section,
        int(settings["num_workers"]),
        float(settings["cpus_per_worker"]),
        bool(settings["use_gpu"]),
        1,
    )


@dataclass(frozen=True)
class Capacity:
    """Alive resources of a Ray cluster: totals and the largest node's."""

    cpus: float
    gpus: float
    node_cpus: float
    node_gpus: float


def cluster_capacity() -> Capacity:
    """The resources of the alive nodes of the Ray cluster this process is connected to."""
    import ray

    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    cpus = [float(res.get("CPU", 0.0)) for res in nodes] or [0.0]
    gpus = [float(res.get("GPU", 0.0)) for res in nodes] or [0.0]
    return Capacity(sum(cpus), sum(gpus), max(cpus), max(gpus))


def _cluster_words(ray_cfg: Any) -> str:
    address = str(getattr(ray_cfg, "address", "") or "")
    if address:
        return f"the Ray cluster at {address}"
    return f"the local Ray (ray.num_cpus = {int(ray_cfg.num_cpus)})"


def shortfall(demand: Demand, capacity: Capacity, ray_cfg: Any) -> str | None:
    """Why ``capacity`` cannot run ``demand`` (a message naming the settings), or None."""
    s, where = demand.section, _cluster_words(ray_cfg)
    change = (
        f"Change ray.num_cpus (or add nodes to the cluster), {s}.num_workers or "
        f"{s}.cpus_per_worker."
    )
    if capacity.cpus < demand.cpus:
        return (
            f"{s} needs {demand.cpus:g} CPUs: {demand.num_workers} workers x "
            f"{demand.cpus_per_worker:g} ({s}.num_workers x {s}.cpus_per_worker) plus "
            f"{demand.input_streams * INPUT_CPUS_PER_STREAM} for the Ray Data input pipeline "
            f"that feeds them; {where} has {capacity.cpus:g}. Without those CPUs the input "
            f"pipeline cannot run and training would wait forever. {change}"
        )
    if capacity.node_cpus < demand.cpus_per_worker:
        return (
            f"{s}.cpus_per_worker is {demand.cpus_per_worker:g} but the largest node of {where} "
            f"has {capacity.node_cpus:g} CPUs: a worker cannot be placed. {change}"
        )
    if demand.use_gpu and capacity.gpus < demand.num_workers:
        return (
            f"{s} needs {demand.num_workers} GPUs ({s}.num_workers with {s}.use_gpu) but {where} "
            f"has {capacity.gpus:g}. Change {s}.num_workers or {s}.use_gpu, or add GPU nodes."
        )
    return None


def require_capacity(ray_cfg: Any, demand: Demand) -> Capacity:
    """Return the cluster's capacity once it can run ``demand``; raise
    :class:`InsufficientResourcesError` otherwise: at once for a local Ray (it cannot grow), after
    ``ray.resource_timeout_s`` seconds of waiting for a remote cluster to grow."""
    timeout = float(ray_cfg.resource_timeout_s)
    remote = bool(str(getattr(ray_cfg, "address", "") or ""))
    deadline = time.monotonic() + (timeout if remote else 0.0)
    while True:
        capacity = cluster_capacity()
        problem = shortfall(demand, capacity, ray_cfg)
        if problem is None:
            return capacity
        if time.monotonic() >= deadline:
            waited = f" (waited {timeout:g} s: ray.resource_timeout_s)" if remote else ""
            raise InsufficientResourcesError(problem + waited)
        time.sleep(POLL_SECONDS)


def input_cpus_per_stream(capacity: Capacity, demand: Demand) -> int:
    """The CPUs each input stream may use: the cluster's CPUs beside the workers, shared equally
    (a Ray Data limit, so no stream can take the CPUs another one needs)."""
    spare = capacity.cpus - demand.worker_cpus
    return max(INPUT_CPUS_PER_STREAM, int(spare // max(1, demand.input_streams)))


def startup_timeout_message(demand: Demand, timeout_s: float) -> str:
    """The error when Ray Train's workers did not all start within ``timeout_s``."""
    s = demand.section
    return (
        f"{s}: the {demand.num_workers} training workers did not start within {timeout_s:g} s "
        f"(ray.resource_timeout_s): the cluster lacks free resources for them (other jobs, or "
        f"nodes lost). Change ray.num_cpus (or add nodes), {s}.num_workers or "
        f"{s}.cpus_per_worker, or raise ray.resource_timeout_s."
    )


def no_retry_failure_config() -> Any:
    """Ray Train's FailureConfig without retries: a failed worker, or a worker group that cannot
    start (Ray Train would otherwise retry that for ever), fails the stage."""
    import ray.train

    return ray.train.FailureConfig(max_failures=0, controller_failure_limit=0)


def fit_within_timeout(trainer: Any, demand: Demand, timeout_s: float) -> Any:
    """``trainer.fit()`` of a Ray Train trainer whose workers must start within ``timeout_s``
    (they wait for free resources); if they do not, an :class:`InsufficientResourcesError`
    naming the settings to change. Use with :func:`no_retry_failure_config`."""
    import os

    import ray.train
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

    os.environ[WORKER_GROUP_TIMEOUT_ENV] = str(timeout_s)  # read by Ray Train's controller
    try:
        return trainer.fit()  # raises ray.train.TrainingFailedError with the worker's error
    except ray.train.ControllerError as error:
        if isinstance(error.controller_failure, WorkerGroupStartupTimeoutError):
            raise InsufficientResourcesError(startup_timeout_message(demand, timeout_s)) from error
        raise
