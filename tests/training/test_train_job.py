"""The job a training stage sends to its Ray Train workers: typed, frozen, picklable, and enough
for a worker to build the stage's module (no Ray needed here)."""

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from pipeline.config import load_config
from pipeline.sampling.tiles import Tiling
from pipeline.training.callbacks import SampleGridCallback
from pipeline.training.clip_module import ClipModule
from pipeline.training.clip_stage import ClipWorkerData, clip_model_kwargs, clip_worker_parts
from pipeline.training.diffusion_module import GlideDiffusionModule
from pipeline.training.model_setup import build_tokenizer, diffusion_settings, glide_model_kwargs
from pipeline.training.train_job import TrainJob
from pipeline.training.worker_parts import diffusion_worker_parts

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cfg():
    return load_config(["profile=ci"], params_path=None, conf_dir=REPO / "conf")


def diffusion_job(cfg, stage: str, model_section: str, **fields) -> TrainJob:
    """A diffusion stage's job as ``diffusion_stage`` builds it (no data, no MLflow run)."""
    model_cfg = cfg[model_section]
    return TrainJob(
        cfg=cfg,
        stage=stage,
        model_section=model_section,
        model_kwargs=glide_model_kwargs(model_cfg, build_tokenizer(model_cfg).vocab_size),
        diffusion=diffusion_settings(model_cfg),
        fingerprint="0123456789abcdef",
        build_parts=diffusion_worker_parts,
        **fields,
    )


def round_trip(job: TrainJob) -> TrainJob:
    return pickle.loads(pickle.dumps(job))


def test_the_job_pickles_round_trip_with_its_builder_by_reference(cfg):
    job = diffusion_job(cfg, "pretrain_base", "base_model", provenance={"data": "x"})
    copy = round_trip(job)
    assert copy.build_parts is diffusion_worker_parts  # the function itself, not a copy
    for item in dataclasses.fields(TrainJob):
        if item.name != "cfg":
            assert getattr(copy, item.name) == getattr(job, item.name), item.name
    assert OmegaConf.to_container(copy.cfg) == OmegaConf.to_container(cfg, resolve=True)
    assert copy.train.max_steps == cfg.pretrain_base.max_steps
    assert copy.model.image_size == cfg.base_model.image_size


def test_the_job_is_frozen_and_its_config_read_only(cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = diffusion_job(cfg, "finetune_cfg", "base_model", init_from="models/base.pt")
    assert job.init_from == str(tmp_path / "models/base.pt")  # workers run elsewhere
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.stage = "pretrain_base"
    with pytest.raises(ReadonlyConfigError):
        job.cfg.pretrain_base.max_steps = 1
    assert not job.tracked


def test_a_worker_builds_the_diffusion_module_from_the_job(cfg):
    job = round_trip(diffusion_job(cfg, "pretrain_base", "base_model"))
    parts = job.build_parts(job, None)
    assert isinstance(parts.module, GlideDiffusionModule)
    assert parts.module.train_cfg == OmegaConf.to_container(cfg.pretrain_base, resolve=True)
    assert parts.module.model_kwargs == job.model_kwargs
    (grids,) = parts.callbacks
    assert isinstance(grids, SampleGridCallback) and grids.upsample is None
    assert parts.final_metrics()["nonfinite_steps"] == 0


def test_an_upsampler_grid_takes_its_settings_from_the_config():
    cfg = load_config(
        [
            "profile=ci",
            "train_upsampler.sample_temperature=0.5",
            "train_upsampler.sample_aug_level=7",
            "evaluate.upsample_tile_size=32",
            "evaluate.upsample_projection=true",
        ],
        params_path=None,
        conf_dir=REPO / "conf",
    )
    low, high = np.zeros((16, 16, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)
    sources = [{"base": low, "hires": high, "caption": "a red circle"}]
    job = round_trip(
        diffusion_job(cfg, "train_upsampler", "upsample_model", upsample_sources=sources)
    )
    assert job.model_kwargs["super_res"]
    (grids,) = job.build_parts(job, None).callbacks
    assert grids.upsample.temperature == 0.5
    assert grids.upsample.aug_level == 7
    # sampled as the evaluation samples it: its tiles, stride, step limit and projection
    assert grids.upsample.tiling == Tiling(32, 8, 200)
    assert grids.upsample.project
    assert grids.prompts == ["a red circle"]


def test_a_worker_builds_the_clip_module_from_the_job(cfg):
    job = TrainJob(
        cfg=cfg,
        stage="train_noised_clip",
        model_section="noised_clip",
        model_kwargs=clip_model_kwargs(cfg),
        diffusion={"diffusion_steps": 1000, "noise_schedule": "squaredcos_cap_v2"},
        fingerprint="0123456789abcdef",
        build_parts=clip_worker_parts,
        worker_data=ClipWorkerData(val=None, log_prefix="eval_clip/"),
    )
    copy = round_trip(job)
    assert copy.worker_data == job.worker_data
    parts = copy.build_parts(copy, None)
    assert isinstance(parts.module, ClipModule) and parts.callbacks == []
    assert parts.module.log_prefix == "eval_clip/"


def test_a_residual_v_upsampler_section_trains_and_saves_its_parameterisation(cfg):
    residual = {"prediction_type": "v", "low_res_residual": True, "sigma_data": 0.1}
    glide = {"prediction_type": "epsilon", "low_res_residual": False, "sigma_data": 1.0}
    for want in (glide, residual):
        config = OmegaConf.merge(cfg, {"upsample_model": want})
        job = round_trip(diffusion_job(config, "train_upsampler", "upsample_model"))
        module = job.build_parts(job, None).module
        assert module.diffusion.prediction_type == want["prediction_type"]
        assert module.diffusion.low_res_residual is want["low_res_residual"]
        assert module.diffusion.sigma_data == want["sigma_data"]
        saved = {key: module.diffusion_settings[key] for key in want}  # what the file keeps
        assert saved == want
