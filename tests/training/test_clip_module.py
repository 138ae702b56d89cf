"""CLIP training: the symmetric contrastive loss, retrieval accuracy, and a tiny CLIP that learns
a few fixed pairs through the Lightning module the stage runs."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.config import SyntheticScenesConfig
from pipeline.data.synthetic_scenes import generate_sample
from pipeline.text.clip_tokens import clip_text_tokens, clip_vocab_size
from pipeline.training.clip_module import ClipModule
from pipeline.training.contrastive import (
    captions_match,
    contrastive_loss,
    retrieval_accuracy,
    same_caption,
)
from tests.models.test_noised_clip import DIFFUSION
from tests.models.test_noised_clip import TINY_CLIP as TINY_CLIP_12

TINY_CLIP = {**TINY_CLIP_12, "text_ctx": 16}
STEPS = 40


@pytest.fixture(autouse=True)
def _single_thread():
    """A tiny model trains fastest on one thread, above all on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def clip_train(**overrides):
    base = dict(
        max_steps=STEPS,
        lr=3e-3,
        weight_decay=0.0,
        adam_betas=[0.9, 0.98],
        warmup_steps=0,
        lr_schedule="constant",
        max_consecutive_nonfinite=3,
        noised=False,
        val_timesteps=[0, 500],
        val_every_steps=0,
    )
    base.update(overrides)
    return base


def test_loss_without_repeated_captions_is_clips_symmetric_cross_entropy():
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(5)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(contrastive_loss(logits), expected)
    tokens = clip_text_tokens(["a", "b", "c", "d", "e"], 8)
    torch.testing.assert_close(contrastive_loss(logits, same_caption(tokens)), expected)


def test_repeated_captions_count_as_matches():
    tokens = clip_text_tokens(["a red circle", "a blue square", "a red circle"], 8)
    matches = same_caption(tokens)
    assert matches.tolist() == [[True, False, True], [False, True, False], [True, False, True]]
    # CLIP's diagonal target prefers pushing the repeated caption away; matches prefer a tie
    tied = torch.tensor([[5.0, 0.0, 5.0], [0.0, 5.0, 0.0], [5.0, 0.0, 5.0]])
    apart = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    assert contrastive_loss(apart) < contrastive_loss(tied)
    assert contrastive_loss(tied, matches) < contrastive_loss(apart, matches)
    z = torch.eye(3)
    z_text = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    accuracy = retrieval_accuracy(z, z_text, matches)  # image 0 retrieves text 2: same caption
    assert accuracy["image_to_text"] == 1.0 and accuracy["text_to_image"] == 1.0
    assert abs(accuracy["chance"] - (2 / 3 + 1 / 3 + 2 / 3) / 3) < 1e-6


def fixed_pairs(count=8):
    """``count`` synthetic scenes with distinct captions: uint8 [N, 16, 16, 3], captions."""
    images, captions, index = [], [], 0
    scenes = SyntheticScenesConfig(max_objects=1)
    while len(captions) < count:
        image, caption, _ = generate_sample(index, 0, scenes, 16)
        index += 1
        if caption not in captions:
            images.append(np.asarray(image))
            captions.append(caption)
    return np.stack(images), captions


class RepeatBatch:
    """The same batch ``times`` times (an iterable Lightning takes as its train loader)."""

    def __init__(self, batch, times):
        self.batch, self.times = batch, times

    def __iter__(self):
        return iter([self.batch] * self.times)


def test_tiny_clip_learns_fixed_pairs_loss_falls_and_retrieval_beats_chance():
    torch.manual_seed(0)
    images, captions = fixed_pairs()
    batch = {
        "image": torch.from_numpy(images),
        "tokens": clip_text_tokens(captions, TINY_CLIP["text_ctx"]),
    }
    module = ClipModule(
        {**TINY_CLIP, "vocab_size": clip_vocab_size()},
        DIFFUSION,
        clip_train(),
        val={"images": images, "captions": captions},
        seed=0,
    )
    x0 = batch["image"].permute(0, 3, 1, 2).float() / 127.5 - 1
    t0 = torch.zeros(len(captions), dtype=torch.long)
    with torch.no_grad():
        before = contrastive_loss(module.model.logits(x0, t0, batch["tokens"])).item()
    chance = module.validate_retrieval()["val/chance"]
    trainer = pl.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=RepeatBatch(batch, STEPS))
    with torch.no_grad():
        after = contrastive_loss(module.model.logits(x0, t0, batch["tokens"])).item()
    metrics = module.final_metrics()
    assert after < 0.5 * before, (before, after)
    assert chance == 1 / len(captions)
    assert metrics["val/t0/text_to_image"] > 2 * chance
    assert metrics["val/t0/image_to_text"] > 2 * chance
    assert "val/t500/text_to_image" in metrics and metrics["nonfinite_steps"] == 0


def test_noised_training_draws_uniform_timesteps_reproducibly():
    module = ClipModule(
        {**TINY_CLIP, "vocab_size": clip_vocab_size()}, DIFFUSION, clip_train(noised=True)
    )
    x0 = torch.zeros(64, 3, 16, 16)
    from pipeline.training.clip_module import step_generator

    x_t, t = module.noised_inputs(x0, step_generator(0, 5, 0))
    again, t_again = module.noised_inputs(x0, step_generator(0, 5, 0))
    assert torch.equal(t, t_again) and torch.equal(x_t, again)
    assert int(t.min()) >= 0 and int(t.max()) < 1000 and len(set(t.tolist())) > 32
    # x_t = sqrt(1 - alpha_bar_t) * noise for x0 = 0: the noise grows with t
    spread = x_t.flatten(1).std(dim=1)
    order = t.argsort()
    assert spread[order[:8]].mean() < spread[order[-8:]].mean()
    clean = ClipModule({**TINY_CLIP, "vocab_size": clip_vocab_size()}, DIFFUSION, clip_train())
    x_clean, t_clean = clean.noised_inputs(x0 + 0.5, step_generator(0, 5, 0))
    assert torch.equal(x_clean, x0 + 0.5) and int(t_clean.abs().sum()) == 0


def test_matching_captions_helper():
    assert captions_match(["a", "b", "a"]).tolist() == [
        [True, False, True],
        [False, True, False],
        [True, False, True],
    ]
