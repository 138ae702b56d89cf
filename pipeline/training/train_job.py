"""What a training stage asks the Ray Train launcher to run: one typed, frozen, picklable job.

The stage's driver builds a :class:`TrainJob`; ``launcher.fit_on_ray`` plans where it resumes
(:class:`ResumePlan`) and sends both to every worker, which reads their fields and calls
``job.build_parts`` (a module-level function, pickled by reference) to build the stage's
LightningModule and callbacks. Defaults of the training settings live in the config schema
only: the job carries the stage's resolved config and nothing restates it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from pipeline.training.worker_parts import WorkerParts

# log_image(PIL image, artifact_file): logs an image to the stage's MLflow run (rank 0 only)
LogImage = Callable[[Any, str], None]
# build_parts(job, log_image or None): the stage's module and callbacks on a worker
BuildParts = Callable[["TrainJob", "LogImage | None"], "WorkerParts"]


def resolved_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` with every interpolation resolved, as a read-only plain (untyped) DictConfig."""
    plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    OmegaConf.set_readonly(plain, True)
    return plain


@dataclass(frozen=True)
class TrainJob:
    """One training run of a stage, as every Ray Train worker receives it.

    ``cfg``: the whole configuration (resolved and read-only on construction); ``stage`` names
    its training section and ``model_section`` its model section. ``model_kwargs`` and
    ``diffusion`` (``diffusion_steps``, ``noise_schedule``) build the network and its schedule.
    ``fingerprint`` identifies the run's resume checkpoints (``launcher.run_fingerprint``).
    ``build_parts`` builds the stage's module on each worker (e.g.
    ``worker_parts.diffusion_worker_parts``). ``run_id`` and ``tracking_uri`` name the stage's
    MLflow run ("" for none); ``init_from`` is the model file the stage starts from ("" for
    none; made absolute, since workers may run in another folder); ``provenance`` (plain data)
    is recorded in the model file's ``extra``. ``edit_sources`` (inpainting: uint8 HWC images)
    ``upsample_sources`` (super-resolution: ``{"base", "hires", "caption"}``) and
    ``instruct_sources`` (instruction editing: ``{"source", "caption"}``) are the held-out
    images of the sample grids; ``worker_data`` is the stage's own data for
    ``build_parts`` (e.g. the CLIP stage's validation pairs).
    """

    cfg: DictConfig
    stage: str
    model_section: str
    model_kwargs: dict[str, Any]
    diffusion: dict[str, Any]
    fingerprint: str
    build_parts: BuildParts
    run_id: str = ""
    tracking_uri: str = ""
    init_from: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    edit_sources: list[Any] = field(default_factory=list)
    upsample_sources: list[dict[str, Any]] = field(default_factory=list)
    instruct_sources: list[dict[str, Any]] = field(default_factory=list)
    worker_data: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cfg", resolved_config(self.cfg))
        if self.init_from:
            object.__setattr__(self, "init_from", str(Path(self.init_from).resolve()))

    @property
    def train(self) -> DictConfig:
        """The stage's training section of the config."""
        return self.cfg[self.stage]

    @property
    def model(self) -> DictConfig:
        """The stage's model section of the config."""
        return self.cfg[self.model_section]

    @property
    def tracked(self) -> bool:
        """Whether the job logs to an MLflow run."""
        return bool(self.run_id and self.tracking_uri)


@dataclass(frozen=True)
class ResumePlan:
    """Where the launcher placed a job: its resume checkpoint folder, the step its workers'
    data streams start from (that of ``last.ckpt`` there, 0 if none), and the hint an input
    stream that starves names (the settings to change)."""

    checkpoint_dir: Path
    resumed_step: int
    starved_hint: str
