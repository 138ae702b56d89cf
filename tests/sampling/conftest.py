"""A tiny trained-format model file for the sampling API and the glide-sample command."""

import pytest
import torch

from pipeline.models import create_glide_model
from pipeline.models.model_file import model_file_payload
from pipeline.text import get_tokenizer
from tests.training.conftest import DIFFUSION, TINY_MODEL


@pytest.fixture(scope="session")
def clip_tokenizer():
    return get_tokenizer("clip")


def write_model_file(path, tokenizer, diffusion=DIFFUSION, **overrides):
    torch.manual_seed(0)
    model = create_glide_model(**{**TINY_MODEL, "vocab_size": tokenizer.vocab_size, **overrides})
    payload = model_file_payload(
        model.state_dict(),
        model.config,
        diffusion=diffusion,
        tokenizer=tokenizer.identity,
        step=7,
        mlflow_run_id="run-123",
        stage="finetune_cfg",
    )
    torch.save(payload, path)
    return path


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory, clip_tokenizer):
    return write_model_file(tmp_path_factory.mktemp("models") / "cfg.pt", clip_tokenizer)
