"""The train_noised_clip stage's library on real Ray (Data + Train), real shards and a real MLflow
store: both CLIPs trained, their files and metrics, resuming from the run's checkpoints."""

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.config import load_config
from pipeline.data.manifest import read_manifest
from pipeline.data.sharding import build_shards
from pipeline.models.clip_file import load_noised_clip
from pipeline.models.eval_clip import load_eval_clip
from pipeline.models.model_file import ModelFileError
from pipeline.tracking import stage_run
from pipeline.training.clip_stage import run_clip_stage, train_clip, write_openai_reference

REPO = Path(__file__).resolve().parents[2]
TINY = (
    "shard.num_samples=40",
    "shard.samples_per_shard=8",
    "shard.val_fraction=0.2",
    "train_noised_clip.max_steps=6",
    "train_noised_clip.batch_size=8",
    "train_noised_clip.checkpoint_every_steps=3",
    "train_noised_clip.val_every_steps=3",
    "train_noised_clip.val_samples=8",
    "eval_clip.max_steps=4",
    "eval_clip.batch_size=8",
    "eval_clip.checkpoint_every_steps=2",
    "eval_clip.val_samples=8",
    "eval_clip.log_every_steps=2",
)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("GLIDE_PIPELINE_KEY", "clip-stage-test")
    monkeypatch.delenv("GLIDE_PIPELINE_RUN_ID", raising=False)
    return tmp_path


def test_stage_trains_the_noised_and_the_evaluation_clip(ray_session, workdir):
    cfg = load_config(["profile=ci", *TINY], params_path=None, conf_dir=REPO / "conf")
    build_shards(cfg, run_id="")
    with stage_run(cfg, "train_noised_clip") as run:
        record = run_clip_stage(cfg, run=run, metrics_path="metrics/clip.json")
    noised, evaluation = record["noised_clip"], record["eval_clip"]
    assert noised["step"] == 6 and evaluation["step"] == 4
    for t in (0, 250, 500, 750):
        assert 0.0 <= noised[f"val/t{t}/text_to_image"] <= 1.0
    assert "val/t250/text_to_image" not in evaluation  # the clean CLIP is validated at t = 0
    assert evaluation["metric_name"] == "clip_score_proxy"

    guidance, info = load_noised_clip("models/noised_clip.pt")
    assert info["extra"]["noised"] is True and info["mlflow_run_id"] == run.run_id
    assert info["diffusion"] == {"diffusion_steps": 1000, "noise_schedule": "squaredcos_cap_v2"}
    eval_clip = load_eval_clip("models/eval_clip.pt")
    clean, _ = load_noised_clip("models/eval_clip.pt")
    assert eval_clip.metric_name == "clip_score_proxy"
    # its own seed: a different network, not a copy of the guidance CLIP
    assert not torch.equal(clean.visual.conv1.weight, guidance.visual.conv1.weight)

    history = MlflowClient().get_run(run.run_id).data.metrics
    assert "val/t750/image_to_text" in history and "train/loss" in history
    assert "eval_clip/val/t0/text_to_image" in history and "eval_clip/train/loss" in history

    # a second run resumes from the run's last checkpoint (here: at max_steps) to the same model
    manifest = read_manifest(Path("data/shards").resolve())
    again = train_clip(
        cfg,
        stage="train_noised_clip",
        run=None,
        shard_dir=Path("data/shards").resolve(),
        manifest=manifest,
    )
    assert again["resumed_from_step"] == 6 and again["step"] == 6
    resumed, _ = load_noised_clip("models/noised_clip.pt")
    for name, tensor in guidance.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name


def test_openai_weights_replace_the_trained_evaluation_clip(tmp_path):
    """With eval_clip.openai_weights the stage trains no evaluation CLIP: models/eval_clip.pt
    points at the weights, and evaluation names its metric the standard clip_score."""
    from tests.models.test_noised_clip import openai_style_state_dict

    weights = tmp_path / "ViT-tiny.pt"
    torch.save(openai_style_state_dict()[1], weights)
    output = tmp_path / "eval_clip.pt"
    cfg = load_config(
        ["profile=ci", f"eval_clip.openai_weights={weights}", f"eval_clip.output={output}"],
        params_path=None,
        conf_dir=REPO / "conf",
    )
    assert write_openai_reference(cfg)["metric_name"] == "clip_score"
    evaluation = load_eval_clip(output)
    assert evaluation.metric_name == "clip_score" and evaluation.source == str(weights)
    assert evaluation.encode_text(["a red circle"]).shape == (1, 16)
    weights.write_bytes(weights.read_bytes() + b"changed")
    with pytest.raises(ModelFileError, match="changed since"):
        load_eval_clip(output)
