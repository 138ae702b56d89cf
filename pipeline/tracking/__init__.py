"""Experiment tracking with MLflow: pipeline parent runs and stage child runs."""

from pipeline.tracking.git_info import git_state
from pipeline.tracking.pipeline_key import pipeline_execution_key
from pipeline.tracking.runs import (
    StageRun,
    ensure_experiment,
    find_or_create_pipeline_run,
    stage_run,
    tracking_uri,
)

__all__ = [
    "StageRun",
    "ensure_experiment",
    "find_or_create_pipeline_run",
    "git_state",
    "pipeline_execution_key",
    "stage_run",
    "tracking_uri",
]
