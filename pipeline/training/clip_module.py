"""The Lightning module of the CLIP stages: the noised CLIP (guidance) and the clean CLIP
(evaluation), trained with CLIP's symmetric contrastive loss and a learned logit scale.

Noised training draws t uniformly in [0, T) for every image and noises it with the base model's
schedule (x_t = q_sample(x_0, t)); clean training uses t = 0 and the clean image. The draws come
from a generator seeded by (seed, step, rank), so a resumed run draws what an uninterrupted run
would have drawn without storing generator state. Validation: text->image and image->text top-1
retrieval on held-out pairs, noised at each of ``val_timesteps`` with fixed noise, so one can see
how much of the caption survives the noise.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from pipeline.diffusion import create_diffusion
from pipeline.models.clip_file import clip_file_payload
from pipeline.models.noised_clip import NoisedCLIP
from pipeline.text.clip_tokens import clip_text_tokens
from pipeline.training.contrastive import (
    captions_match,
    contrastive_loss,
    retrieval_accuracy,
    same_caption,
)
from pipeline.training.diffusion_module import images_to_model_range
from pipeline.training.nonfinite import NonFiniteGuard, SkipsNonFiniteSteps
from pipeline.training.optim import ClipsGradientsItself, lightning_optimizers


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator of one training step's timesteps and noise (CPU, stateless across resumes)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step)) * 1009 + int(rank))


class ClipModule(SkipsNonFiniteSteps, ClipsGradientsItself, pl.LightningModule):
    """``model_kwargs``: NoisedCLIP settings; ``diffusion``: ``diffusion_steps`` and
    ``noise_schedule``; ``train``: the stage's ClipTrainConfig as a plain dict; ``val``: held-out
    pairs ``{"images": uint8 [N, H, W, 3], "captions": [str]}`` or None; ``log_prefix`` names its
    metrics in a run shared with another CLIP (``eval_clip/``)."""

    def __init__(
        self,
        model_kwargs: dict[str, Any],
        diffusion: dict[str, Any],
        train: dict[str, Any],
        *,
        val: dict[str, Any] | None = None,
        seed: int = 0,
        log_prefix: str = "",
    ) -> None:
        super().__init__()
        self.model_kwargs = dict(model_kwargs)
        self.diffusion_settings = dict(diffusion)
        self.train_cfg = dict(train)
        self.seed = int(seed)
        self.log_prefix = log_prefix
        self.model = NoisedCLIP(**self.model_kwargs)
        self.diffusion = create_diffusion(diffusion["diffusion_steps"], diffusion["noise_schedule"])
        self.noised = bool(self.train_cfg["noised"])
        self.val = val
        self.nonfinite = NonFiniteGuard(
            int(self.train_cfg["max_consecutive_nonfinite"]), "CLIP steps"
        )
        self.recent: deque[Tensor] = deque(maxlen=50)  # the last steps' losses, on device
        self.last_validation: dict[str, float] = {}

    # ------------------------------------------------------------------ training
    def noised_inputs(self, x_start: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(x_t, t): uniform t and q_sample noise when noised; else (x_0, 0)."""
        batch = x_start.shape[0]
        if not self.noised:
            return x_start, torch.zeros(batch, dtype=torch.long, device=x_start.device)
        t = torch.randint(0, self.diffusion.num_timesteps, (batch,), generator=generator)
        noise = torch.randn(x_start.shape, generator=generator).to(x_start)
        t = t.to(x_start.device)
        return self.diffusion.q_sample(x_start, t, noise), t

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        x_start = images_to_model_range(batch["image"])
        tokens = batch["tokens"].long()
        generator = step_generator(self.seed, self.global_step, self.global_rank)
        x_t, t = self.noised_inputs(x_start, generator)
        logits = self.model.logits(x_t, t, tokens)
        matches = same_caption(tokens)
        loss = contrastive_loss(logits, matches)
        if not self.keep_finite_step(loss):
            return None
        with torch.no_grad():
            hits = matches[torch.arange(len(tokens)), logits.argmax(dim=1)].float().mean()
        values = {
            "train/loss": loss.detach(),
            "train/logit_scale": self.model.clamped_logit_scale().exp().detach(),
            "train/batch_image_to_text": hits,
        }
        self.log_dict(
            {self.log_prefix + k: v for k, v in values.items()}, on_step=True, on_epoch=False
        )
        self.log("loss", loss.detach(), prog_bar=True, logger=False)
        self.recent.append(loss.detach())
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW; like CLIP, no weight decay on gains, biases, embeddings and the logit scale."""
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            matrix = param.ndim >= 2 and "embedding" not in name
            (decay if matrix else no_decay).append(param)
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        return lightning_optimizers(groups, self.train_cfg)

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate_retrieval(self) -> dict[str, float]:
        """Retrieval accuracy on the held-out pairs at every ``val_timesteps`` t (fixed noise)."""
        if not self.val or len(self.val["captions"]) < 2:
            return {}
        was_training = self.model.training
        self.model.eval()
        images = torch.from_numpy(np.array(self.val["images"], dtype=np.uint8, copy=True))
        x_start = images_to_model_range(images).to(self.device)
        captions = [str(c) for c in self.val["captions"]]
        z_text = self.model.encode_text(
            clip_text_tokens(captions, self.model.text_ctx).to(self.device)
        )
        matches = captions_match(captions)
        noise = torch.randn(x_start.shape, generator=torch.Generator().manual_seed(self.seed))
        out: dict[str, float] = {}
        for step in self.train_cfg["val_timesteps"]:
            t = torch.full((len(captions),), int(step), dtype=torch.long, device=self.device)
            x_t = self.diffusion.q_sample(x_start, t, noise.to(x_start)) if step else x_start
            accuracy = retrieval_accuracy(self.model.encode_image(x_t, t), z_text, matches)
            out[f"val/t{int(step)}/text_to_image"] = accuracy["text_to_image"]
            out[f"val/t{int(step)}/image_to_text"] = accuracy["image_to_text"]
            out["val/chance"] = accuracy["chance"]
        self.model.train(was_training)
        return out

    def on_train_batch_end(self, *args: Any) -> None:
        step = int(self.global_step)
        every = int(self.train_cfg["val_every_steps"])
        if step == int(self.train_cfg["max_steps"]) or (every > 0 and step % every == 0):
            self.last_validation = self.validate_retrieval()
            if self.last_validation and self.logger is not None:  # not held to log_every_steps
                self.logger.log_metrics(
                    {self.log_prefix + k: v for k, v in self.last_validation.items()}, step=step
                )

    # ------------------------------------------------------------------ state and outputs
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["glide_clip"] = {
            **self.nonfinite.state_dict(),
            "recent": [float(x) for x in self.recent],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["glide_clip"]
        self.nonfinite.load_state_dict(state)
        self.recent = deque((torch.tensor(x) for x in state["recent"]), maxlen=50)

    def final_metrics(self) -> dict[str, float]:
        """Mean loss of the last (up to 50) steps and the last retrieval validation."""
        if not self.last_validation:
            self.last_validation = self.validate_retrieval()
        out: dict[str, float] = {"nonfinite_steps": self.nonfinite_total}
        finite = [x for x in map(float, self.recent) if math.isfinite(x)]
        if finite:
            out["final_loss"] = sum(finite) / len(finite)
        out.update(self.last_validation)
        return out

    def model_file(
        self, *, mlflow_run_id: str, stage: str, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The CLIP model file payload (the trained weights; no EMA for CLIP)."""
        return clip_file_payload(
            {k: v.float() for k, v in self.model.state_dict().items()},
            self.model_kwargs,
            diffusion=self.diffusion_settings,
            step=int(self.global_step),
            mlflow_run_id=mlflow_run_id,
            stage=stage,
            extra={**(extra or {}), "noised": self.noised, "nonfinite_steps": self.nonfinite_total},
        )
