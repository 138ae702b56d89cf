"""Tiny GLIDE settings and batches shared by the training tests."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from pipeline.config import SyntheticScenesConfig, TrainConfig
from pipeline.data.synthetic_scenes import generate_sample
from pipeline.text import get_tokenizer, tokenize_batch

TINY_MODEL = dict(
    image_size=16,
    num_channels=16,
    num_res_blocks=1,
    channel_mult=(1, 2),
    attention_resolutions=(8,),
    num_head_channels=16,
    dropout=0.0,
    text_ctx=16,
    xf_width=32,
    xf_layers=1,
    xf_heads=2,
)
DIFFUSION = {"diffusion_steps": 1000, "noise_schedule": "squaredcos_cap_v2"}


def train_settings(**overrides):
    """A diffusion stage's TrainConfig as the module receives it (a plain dict of every key,
    the schema's defaults under these tiny ones), with ``overrides``."""
    base = OmegaConf.to_container(OmegaConf.structured(TrainConfig(output="unused.pt")))
    base.update(
        max_steps=50,
        batch_size=4,
        lr=1e-3,
        weight_decay=0.0,
        adam_betas=[0.9, 0.999],
        warmup_steps=0,
        lr_schedule="constant",
        grad_clip=1.0,
        ema_decay=0.9,
        caption_drop_prob=0.0,
        max_consecutive_nonfinite=3,
    )
    base.update(overrides)
    return base


@pytest.fixture(scope="session")
def tokenizer():
    return get_tokenizer("clip")


@pytest.fixture(scope="session")
def tiny_model_kwargs(tokenizer):
    return {**TINY_MODEL, "vocab_size": tokenizer.vocab_size}


@pytest.fixture(scope="session")
def scene_batch(tokenizer):
    """4 synthetic scenes at 16x16: uint8 images [4,16,16,3], tokens and mask [4,16]."""
    images, captions = [], []
    for index in range(4):
        image, caption, _ = generate_sample(index, 0, SyntheticScenesConfig(), 16)
        images.append(np.asarray(image))
        captions.append(caption)
    tokens, mask = tokenize_batch(tokenizer, captions, 16, warn=False)
    return {"image": torch.from_numpy(np.stack(images)), "tokens": tokens, "mask": mask}
