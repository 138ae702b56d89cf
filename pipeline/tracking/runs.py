"""MLflow runs: one parent run per pipeline execution, one child run per stage.

Each stage is a separate process; they find their common parent run through the pipeline
execution key (see :mod:`pipeline.tracking.pipeline_key`), stored as a tag on the parent.

The parent run is where a reviewer compares pipeline executions, so it also carries the resolved
config as params (logged by the first stage) and each stage's summary metrics (those named
``<stage>/...``, copied when the stage finishes).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pipeline.config import save_config, to_flat_dict
from pipeline.tracking.git_info import git_state
from pipeline.tracking.pipeline_key import pipeline_execution_key

PIPELINE_KEY_TAG = "glide.pipeline_key"
KIND_TAG = "glide.kind"
STAGE_TAG = "glide.stage"
PROFILE_TAG = "glide.profile"
_PARAM_BATCH = 100
_PARAM_MAX_LEN = 6000


def tracking_uri(cfg: DictConfig) -> str:
    """MLFLOW_TRACKING_URI, else ``tracking.uri``, else a SQLite store at ``./mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    uri = str(cfg.tracking.uri)
    if not uri:
        return f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"
    if "://" not in uri:  # a bare path: a SQLite file
        return f"sqlite:///{Path(uri).resolve()}"
    return uri


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(client: Any, name: str, artifact_root: str) -> str:
    """Return the experiment id of ``name``, creating it (with local artefacts) if needed."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if client.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in client.tracking_uri:
        location = (Path(artifact_root).resolve() / name).as_uri()
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:  # created concurrently by another stage
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def find_or_create_pipeline_run(client: Any, experiment_id: str, cfg: DictConfig) -> str:
    """The parent run of this pipeline execution (created by the first stage that runs)."""
    explicit = os.environ.get("GLIDE_PIPELINE_RUN_ID")
    if explicit:
        return explicit
    key, origin = pipeline_execution_key()
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{key}'", max_results=1
    )
    if runs:
        return str(runs[0].info.run_id)
    tags = {
        PIPELINE_KEY_TAG: key,
        KIND_TAG: "pipeline",
        PROFILE_TAG: str(cfg.profile),
        "glide.pipeline_origin": origin,
        **{f"glide.{k}": v for k, v in git_state().items()},
    }
    name = f"pipeline-{cfg.profile}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = client.create_run(experiment_id, tags=tags, run_name=name)
    return str(run.info.run_id)


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _PARAM_MAX_LEN else text[: _PARAM_MAX_LEN - 3] + "..."


def _log_params_to_parent(
    client: Any, parent_id: str, stage: str, params: Mapping[str, Any]
) -> None:
    """Log the params the parent run lacks (MLflow params cannot change once logged).

    A stage whose config differs from what the parent already holds (a stage re-run with other
    overrides under the same parent) is flagged by the tag ``glide.params_differ.<stage>``.
    """
    from mlflow.entities import Param

    existing = client.get_run(parent_id).data.params
    values = {k: _param_value(v) for k, v in params.items()}
    missing = [Param(k, v) for k, v in values.items() if k not in existing]
    for start in range(0, len(missing), _PARAM_BATCH):
        client.log_batch(parent_id, params=missing[start : start + _PARAM_BATCH])
    differ = sorted(k for k, v in values.items() if k in existing and existing[k] != v)
    if differ:
        client.set_tag(parent_id, f"glide.params_differ.{stage}", ",".join(differ)[:5000])


def _copy_summary_metrics_to_parent(client: Any, run_id: str, parent_id: str, stage: str) -> None:
    """Copy the stage's summary metrics (named ``<stage>/...``) to the parent run."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    latest = client.get_run(run_id).data.metrics
    items = [Metric(k, v, now, 0) for k, v in latest.items() if k.startswith(f"{stage}/")]
    for start in range(0, len(items), 1000):
        client.log_batch(parent_id, metrics=items[start : start + 1000])


class StageRun:
    """A stage's MLflow child run: log metrics, params, tags and artefacts to it."""

    def __init__(self, client: Any, run_id: str, parent_run_id: str, uri: str) -> None:
        self.client = client
        self.run_id = run_id
        self.parent_run_id = parent_run_id
        self.tracking_uri = uri

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for start in range(0, len(items), _PARAM_BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + _PARAM_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_image(self, image: Any, artifact_file: str) -> None:
        """Log a PIL image (or HWC uint8 array) as a PNG artefact."""
        self.client.log_image(self.run_id, image, artifact_file=artifact_file)


@contextlib.contextmanager
def stage_run(cfg: DictConfig, stage: str) -> Iterator[StageRun]:
    """Open the child run of ``stage`` under this pipeline execution's parent run.

    Logs the resolved config as params (and as ``config.yaml``) and tags the run with the stage,
    the profile, the git commit and dirty flag. The parent gets the params it lacks and, when
    the stage succeeds, the stage's ``<stage>/...`` metrics. The run ends FINISHED, or FAILED on an
    exception (which propagates); the parent run's status follows its last stage.
    """
    uri = tracking_uri(cfg)
    client = _client(uri)
    experiment_id = ensure_experiment(
        client, str(cfg.tracking.experiment), cfg.tracking.artifact_root
    )
    parent_id = find_or_create_pipeline_run(client, experiment_id, cfg)
    tags = {
        "mlflow.parentRunId": parent_id,
        KIND_TAG: "stage",
        STAGE_TAG: stage,
        PROFILE_TAG: str(cfg.profile),
        **{f"glide.{k}": v for k, v in git_state().items()},
    }
    run = client.create_run(experiment_id, tags=tags, run_name=stage)
    client.update_run(parent_id, status="RUNNING")
    client.set_tag(parent_id, f"glide.stage_run.{stage}", run.info.run_id)
    handle = StageRun(client, str(run.info.run_id), parent_id, uri)
    params = to_flat_dict(cfg)
    handle.log_params(params)
    _log_params_to_parent(client, parent_id, stage, params)
    with tempfile.TemporaryDirectory() as tmp:
        save_config(cfg, Path(tmp) / "config.yaml")
        handle.log_artifact(Path(tmp) / "config.yaml")
    status = "FAILED"
    try:
        yield handle
        _copy_summary_metrics_to_parent(client, handle.run_id, parent_id, stage)
        status = "FINISHED"
    finally:
        client.set_terminated(handle.run_id, status=status)
        client.set_terminated(parent_id, status=status)
