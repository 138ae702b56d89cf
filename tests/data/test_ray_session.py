"""What init_ray sets up for every stage, checked on a real Ray Train run."""

import os

import pytest

INTERVAL = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def report_the_interval() -> None:
    """Report the interval the worker's Ray sees (Ray keeps metrics only with a checkpoint)."""
    import tempfile

    import ray.train

    folder = tempfile.mkdtemp()
    checkpoint = ray.train.Checkpoint.from_directory(folder)
    ray.train.report({"interval": os.environ.get(INTERVAL, "unset")}, checkpoint=checkpoint)


@pytest.mark.usefixtures("ray_session")
def test_training_runs_start_no_preemption_watcher_and_poll_often(tmp_path):
    """Ray Train's preemption watcher made Ray log an error line ("... max_restarts > 0") at every
    training stage; the stages turn it off, so a training run starts no such actor. Ray's
    processes poll the workers at the stages' health-check interval (a run ends ~1 s after its
    workers, not ~5 s)."""
    import ray.train
    from ray._private import state
    from ray.train.torch import TorchTrainer

    from pipeline.data.ray_session import RAY_TRAIN_ENV

    scaling = ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1})
    run = ray.train.RunConfig(storage_path=str(tmp_path))
    result = TorchTrainer(report_the_interval, scaling_config=scaling, run_config=run).fit()
    classes = {actor["ActorClassName"] for actor in state.actors().values()}
    assert "TrainController" in classes  # the table does list Ray Train's actors
    assert "PreemptionWatcher" not in classes
    assert result.metrics["interval"] == RAY_TRAIN_ENV[INTERVAL]
