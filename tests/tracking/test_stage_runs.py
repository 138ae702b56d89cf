"""MLflow tracking against a real local SQLite store: parent/child runs, params, tags."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import load_config
from pipeline.tracking import stage_run, tracking_uri

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("GLIDE_PIPELINE_RUN_ID", raising=False)
    monkeypatch.setenv("GLIDE_PIPELINE_KEY", "test-execution-1")
    return tmp_path


def ci_config():
    return load_config(["profile=ci"], params_path=None, conf_dir=REPO / "conf")


def test_default_store_is_sqlite_at_cwd(store):
    assert tracking_uri(ci_config()) == f"sqlite:///{store / 'mlflow.db'}"


def test_env_var_overrides_tracking_uri(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri(ci_config()) == "http://127.0.0.1:5999"


def test_stages_of_one_execution_share_a_parent_across_processes(store):
    """Two stage processes with the same execution key end up under one parent run."""
    script = (
        "import sys\n"
        "from pipeline.config import load_config\n"
        "from pipeline.tracking import stage_run\n"
        f"cfg = load_config(['profile=ci'], params_path=None, conf_dir={str(REPO / 'conf')!r})\n"
        "with stage_run(cfg, sys.argv[1]) as run:\n"
        "    run.log_metrics({'m': 1.5})\n"
        "    print(run.run_id, run.parent_run_id)\n"
    )
    env = {**os.environ, "GLIDE_PIPELINE_KEY": "exec-A"}
    outs = [
        subprocess.run(
            [sys.executable, "-c", script, stage],
            env=env,
            cwd=store,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for stage in ("shard", "pretrain_base")
    ]
    (child1, parent1), (child2, parent2) = outs
    assert parent1 == parent2 and child1 != child2
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    for child, stage in ((child1, "shard"), (child2, "pretrain_base")):
        run = client.get_run(child)
        assert run.data.tags["mlflow.parentRunId"] == parent1
        assert run.data.tags["glide.stage"] == stage
        assert run.data.tags["glide.profile"] == "ci"
        assert "glide.git_commit" in run.data.tags and "glide.git_dirty" in run.data.tags
        assert run.data.params["shard.num_samples"] == "256"
        assert run.data.metrics["m"] == 1.5
        assert run.info.status == "FINISHED"
        assert "config.yaml" in [a.path for a in client.list_artifacts(child)]
    parent = client.get_run(parent1)
    assert parent.data.tags["glide.kind"] == "pipeline"
    assert parent.data.tags["glide.stage_run.shard"] == child1

    # another execution gets another parent
    env["GLIDE_PIPELINE_KEY"] = "exec-B"
    child3, parent3 = subprocess.run(
        [sys.executable, "-c", script, "shard"],
        env=env,
        cwd=store,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert parent3 != parent1


def test_failed_stage_marks_its_run_failed(store):
    cfg = ci_config()
    with pytest.raises(ValueError, match="boom"), stage_run(cfg, "shard") as run:
        raise ValueError("boom")
    client = MlflowClient(tracking_uri=tracking_uri(cfg))
    assert client.get_run(run.run_id).info.status == "FAILED"
    assert client.get_run(run.parent_run_id).info.status == "FAILED"
