"""A stage refuses, before any work, a Ray cluster whose CPUs its workers would take from their
own input pipeline, naming the settings to change; waits for a remote cluster end in time."""

import time

import pytest

from pipeline.config import RayConfig, TrainConfig
from pipeline.data.ray_capacity import (
    Capacity,
    InsufficientResourcesError,
    evaluation_demand,
    input_cpus_per_stream,
    require_capacity,
    shortfall,
    training_demand,
)

SETTINGS = ("ray.num_cpus", "pretrain_base.num_workers", "pretrain_base.cpus_per_worker")


def demand(**train):
    return training_demand("pretrain_base", TrainConfig(output="models/base.pt", **train))


def test_workers_plus_one_cpu_per_input_stream_must_fit():
    local = RayConfig(num_cpus=2)
    two = demand(num_workers=2, cpus_per_worker=1)
    message = shortfall(two, Capacity(cpus=2, gpus=0, node_cpus=2, node_gpus=0), local)
    assert message is not None and all(name in message for name in SETTINGS)
    assert "needs 4 CPUs" in message and "has 2" in message and "wait forever" in message
    assert shortfall(two, Capacity(cpus=4, gpus=0, node_cpus=2, node_gpus=0), local) is None
    one = demand(num_workers=1, cpus_per_worker=1)
    assert shortfall(one, Capacity(cpus=2, gpus=0, node_cpus=2, node_gpus=0), local) is None
    # the evaluate stage splits one input stream between its workers
    ev = evaluation_demand("evaluate", {"num_workers": 2, "cpus_per_worker": 1, "use_gpu": False})
    assert ev.cpus == 3


def test_node_size_and_gpus_are_checked():
    remote = RayConfig(address="head:6379")
    wide = demand(num_workers=2, cpus_per_worker=4)
    message = shortfall(wide, Capacity(cpus=16, gpus=0, node_cpus=3, node_gpus=0), remote)
    assert "largest node" in message and "head:6379" in message
    gpu = demand(num_workers=8, cpus_per_worker=1, use_gpu=True)
    message = shortfall(gpu, Capacity(cpus=64, gpus=4, node_cpus=32, node_gpus=4), remote)
    assert "needs 8 GPUs" in message and "pretrain_base.use_gpu" in message


def test_each_input_stream_gets_an_equal_share_of_the_spare_cpus():
    two = demand(num_workers=2, cpus_per_worker=2)
    assert input_cpus_per_stream(Capacity(cpus=10, gpus=0, node_cpus=5, node_gpus=0), two) == 3
    assert input_cpus_per_stream(Capacity(cpus=6, gpus=0, node_cpus=3, node_gpus=0), two) == 1


def test_the_running_ray_is_checked_at_once_or_waited_for_up_to_the_timeout(ray_session):
    """The test session's local Ray has 2 CPUs: one worker fits, two do not; as a remote
    cluster (``ray.address``) it is polled until ``ray.resource_timeout_s`` has passed."""
    capacity = require_capacity(RayConfig(num_cpus=2), demand(num_workers=1))
    assert capacity.cpus == 2
    started = time.monotonic()
    with pytest.raises(InsufficientResourcesError, match="pretrain_base.num_workers"):
        require_capacity(RayConfig(num_cpus=2), demand(num_workers=2))
    assert time.monotonic() - started < 1
    started = time.monotonic()
    remote = RayConfig(address="auto", resource_timeout_s=3)
    with pytest.raises(InsufficientResourcesError, match="waited 3 s"):
        require_capacity(remote, demand(num_workers=2))
    assert 3 <= time.monotonic() - started < 10
