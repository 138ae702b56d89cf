"""The review flow against a real `mlflow server`: two pipeline executions of the shard stage
log to it over HTTP; a reviewer finds each execution's parent run with its stage child runs,
reads params and metrics, downloads artefacts through the server and compares the executions."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.integration.conftest import stage_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXECUTIONS = {"exec-a": 32, "exec-b": 48}  # pipeline key -> shard.num_samples
PIPELINES = "tags.`glide.kind` = 'pipeline'"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(proc: subprocess.Popen, url: str, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"mlflow server did not answer in {timeout:.0f} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A local `mlflow server` (SQLite backend, proxied artefacts); yields (url, folder)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job-runner process
    with open(log, "w") as out:
        # own process group: the server's uvicorn worker is stopped with it
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        wait_until_up(proc, url, log)
        yield url, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def executions(mlflow_server, tmp_path_factory):
    """Two pipeline executions of the shard stage with different params, run at the same time
    (as two people sharing a server would) and logged to the server.

    Returns {pipeline key: the folder the stage ran in}."""
    url, _ = mlflow_server
    folders, procs = {}, {}
    for key, num_samples in EXECUTIONS.items():
        folder = tmp_path_factory.mktemp(key)
        cmd = [
            sys.executable,
            "-m",
            "stages.shard",
            "profile=ci",
            f"shard.num_samples={num_samples}",
            "shard.samples_per_shard=16",
            f"tracking.uri={url}",
        ]
        env = stage_env(PYTHONPATH=str(REPO), GLIDE_PIPELINE_KEY=key)
        log = open(folder / "stage.log", "w")  # noqa: SIM115 (closed below)
        procs[key] = (subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=log), log)
        folders[key] = folder
    for key, (proc, log) in procs.items():
        code = proc.wait(timeout=300)
        log.close()
        if code != 0:
            text = (folders[key] / "stage.log").read_text()[-5000:]
            raise AssertionError(f"shard stage of {key} failed ({code}):\n{text}")
    return folders


@pytest.fixture(scope="module")
def client(mlflow_server):
    return MlflowClient(tracking_uri=mlflow_server[0])


@pytest.fixture(scope="module")
def experiment_id(client, executions):
    return client.get_experiment_by_name("glide").experiment_id


def parent_of(client, experiment_id, key):
    found = client.search_runs(
        [experiment_id], filter_string=f"{PIPELINES} and tags.`glide.pipeline_key` = '{key}'"
    )
    assert len(found) == 1, f"expected one parent run for {key}, got {len(found)}"
    return found[0]


def children_of(client, experiment_id, parent_id):
    return client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )


def test_each_execution_is_one_parent_with_its_stage_runs(client, experiment_id, executions):
    assert len(client.search_runs([experiment_id], filter_string=PIPELINES)) == 2
    for key, folder in executions.items():
        parent = parent_of(client, experiment_id, key)
        assert parent.info.status == "FINISHED"
        assert parent.info.run_name.startswith("pipeline-ci-")
        children = children_of(client, experiment_id, parent.info.run_id)
        assert [c.data.tags["glide.stage"] for c in children] == ["shard"]
        child = children[0]
        assert child.info.status == "FINISHED"
        assert child.data.tags["glide.kind"] == "stage"
        assert parent.data.tags["glide.stage_run.shard"] == child.info.run_id
        # the stage's outputs name the run that produced them
        record = json.loads((folder / "metrics" / "shard.json").read_text())
        manifest = json.loads((folder / "data" / "shards" / "manifest.json").read_text())
        assert record["mlflow_run_id"] == child.info.run_id
        assert manifest["run_id"] == child.info.run_id


def test_params_and_metrics_are_visible_on_stage_and_parent_runs(client, experiment_id, executions):
    for key, num_samples in EXECUTIONS.items():
        parent = parent_of(client, experiment_id, key)
        (child,) = children_of(client, experiment_id, parent.info.run_id)
        record = json.loads((executions[key] / "metrics" / "shard.json").read_text())
        for run_ in (child, parent):
            assert run_.data.params["shard.num_samples"] == str(num_samples)
            assert run_.data.params["profile"] == "ci"
            assert run_.data.metrics["shard/written"] == record["written"] == num_samples
            assert run_.data.metrics["shard/val_samples"] == record["val_samples"]
        assert "glide.params_differ.shard" not in parent.data.tags


def test_artefacts_download_through_the_server(client, experiment_id, executions, tmp_path):
    for key, folder in executions.items():
        parent = parent_of(client, experiment_id, key)
        (child,) = children_of(client, experiment_id, parent.info.run_id)
        # proxied by the server, not a path on the machine that ran the stage
        assert child.info.artifact_uri.startswith("mlflow-artifacts:")
        names = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "manifest.json"} <= names
        dest = tmp_path / key
        dest.mkdir()
        for name in ("config.yaml", "manifest.json"):
            got = Path(client.download_artifacts(child.info.run_id, name, str(dest)))
            assert got.read_bytes() == (folder / "data" / "shards" / name).read_bytes()
        config = yaml.safe_load((dest / "config.yaml").read_text())
        assert config["shard"]["num_samples"] == EXECUTIONS[key]


def test_two_executions_compare_side_by_side(client, experiment_id, executions):
    """What the UI's run table and Compare view show: both parents, differing params/metrics."""
    parents = client.search_runs(
        [experiment_id], filter_string=PIPELINES, order_by=["metrics.`shard/written` ASC"]
    )
    assert [p.data.tags["glide.pipeline_key"] for p in parents] == list(EXECUTIONS)
    a, b = (p.data for p in parents)
    differing = {k for k in a.params if a.params[k] != b.params.get(k)}
    assert differing == {"shard.num_samples"}
    assert a.metrics["shard/written"] < b.metrics["shard/written"]
    chosen = client.search_runs(
        [experiment_id], filter_string=f"{PIPELINES} and params.`shard.num_samples` = '48'"
    )
    assert [p.data.tags["glide.pipeline_key"] for p in chosen] == ["exec-b"]


def test_server_serves_the_ui(mlflow_server):
    with urllib.request.urlopen(mlflow_server[0] + "/", timeout=10) as response:
        assert response.status == 200
        assert b"<html" in response.read(4096).lower()
