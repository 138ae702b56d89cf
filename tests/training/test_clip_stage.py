"""The train_noised_clip stage's library without training: OpenAI weights in place of the
evaluation CLIP. The stage's training run (both CLIPs, files, metrics, MLflow) is checked on the
ci pipeline's own run (tests/integration/test_dvc_pipeline.py) and killed and resumed in
tests/integration/test_kill_and_resume.py."""

from pathlib import Path

import pytest
import torch

from pipeline.config import load_config
from pipeline.models.eval_clip import load_eval_clip
from pipeline.models.model_file import ModelFileError
from pipeline.training.clip_stage import write_openai_reference

REPO = Path(__file__).resolve().parents[2]


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
