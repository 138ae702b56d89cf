"""The data package is cheap to import, and init_ray is idempotent."""

import os
import subprocess
import sys


def test_importing_pipeline_data_pulls_in_nothing_heavy():
    code = (
        "import sys, pipeline.data as d; "
        "heavy = [m for m in ('ray', 'torch', 'PIL', 'lightning') if m in sys.modules]; "
        "assert not heavy, heavy; assert callable(d.build_shards)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_init_ray_is_idempotent_and_deterministic(ray_session):
    import ray
    from ray.data import DataContext

    from pipeline.config.schema import RayConfig
    from pipeline.data.ray_session import init_ray

    DataContext.get_current().execution_options.preserve_order = False
    init_ray(RayConfig(num_cpus=1, object_store_memory_mb=100))  # already running: no restart
    assert ray.is_initialized()
    assert ray.cluster_resources()["CPU"] == 2
    assert DataContext.get_current().execution_options.preserve_order is True


def test_an_empty_address_starts_a_local_ray_even_beside_a_cluster():
    """`ray.address: ""` means a local Ray of `ray.num_cpus`: never a cluster found through
    RAY_ADDRESS (or one a `ray start` left running), which refuses num_cpus."""
    code = (
        "import ray\n"
        "from pipeline.config.schema import RayConfig\n"
        "from pipeline.data.ray_session import init_ray\n"
        "init_ray(RayConfig(num_cpus=1, object_store_memory_mb=100))\n"
        "print(ray.cluster_resources()['CPU'])\n"
    )
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:9"}  # nothing listens there
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "1.0"
