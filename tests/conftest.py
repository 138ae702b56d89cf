"""Session-wide fixtures shared by every test folder."""

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (starting Ray costs ~5 s and ~1 GB).

    2 CPUs, a 300 MB object store, no dashboard, deterministic Ray Data (preserve_order).
    Request it in any test that uses Ray; it is shut down when the session ends.
    """
    import ray

    from pipeline.config.schema import RayConfig
    from pipeline.data.ray_session import init_ray

    started_here = not ray.is_initialized()
    init_ray(RayConfig(num_cpus=2, object_store_memory_mb=300))
    yield
    if started_here:
        ray.shutdown()
