"""What init_ray sets up for every stage, checked on a real Ray Train run."""

import pytest


@pytest.mark.usefixtures("ray_session")
def test_training_runs_start_no_preemption_watcher():
    """Ray Train's preemption watcher made Ray log an error line ("... max_restarts > 0") at every
    training stage; the stages turn it off, so a training run starts no such actor."""
    import ray.train
    from ray._private import state
    from ray.train.torch import TorchTrainer

    scaling = ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1})
    TorchTrainer(lambda: None, scaling_config=scaling).fit()
    classes = {actor["ActorClassName"] for actor in state.actors().values()}
    assert "TrainController" in classes  # the table does list Ray Train's actors
    assert "PreemptionWatcher" not in classes
