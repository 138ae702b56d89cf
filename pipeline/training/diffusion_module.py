"""The one Lightning module for every GLIDE diffusion stage.

Base pretraining, classifier-free-guidance fine-tuning, inpainting fine-tuning and upsampler
training differ only by configuration: the model variant (``inpaint``, ``super_res``), the
noise schedule, the caption-drop probability and the optimiser settings.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from pipeline.data.masks import random_masks
from pipeline.diffusion import create_diffusion
from pipeline.diffusion.noise_aug import noise_augment, random_levels
from pipeline.models import create_glide_model
from pipeline.models.execution import configure_for_training
from pipeline.models.model_file import model_file_payload
from pipeline.text import PAD_ID
from pipeline.training.ema import EMA
from pipeline.training.instruct_drops import condition_drops
from pipeline.training.nonfinite import (  # noqa: F401 (NonFiniteLossError: API)
    NonFiniteGuard,
    NonFiniteLossError,
    SkipsNonFiniteSteps,
)
from pipeline.training.optim import ClipsGradientsItself, lightning_optimizers


def images_to_model_range(images: Tensor) -> Tensor:
    """uint8 [B, H, W, 3] or float [B, 3, H, W] in [-1, 1] -> float [B, 3, H, W] in [-1, 1]."""
    if images.dtype == torch.uint8:
        return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()
    return images.float()


def drop_captions(tokens: Tensor, mask: Tensor, drop: Tensor) -> tuple[Tensor, Tensor]:
    """Replace the captions where ``drop`` [B] is True by the empty caption (all padding)."""
    tokens = torch.where(drop[:, None], torch.full_like(tokens, PAD_ID), tokens)
    mask = mask & ~drop[:, None]
    return tokens, mask


def text_lr_groups(model: torch.nn.Module, lr: float, text_lr_scale: float) -> list[dict]:
    """AdamW parameter groups: the text encoder at ``lr * text_lr_scale``, the rest at ``lr``.

    A small model trained with a high learning rate on small batches can collapse its text
    encoder early: before the UNet can use the caption, caption-dependent conditioning is noise
    to it, and the fast-moving encoder learns to emit nearly the same vector for every caption
    (measured on mini: the spread of xf_out across captions fell from 0.24 to 0.005 in 100
    steps at lr 1e-3, and stayed near 0.1 at 1e-4). A lower rate for the encoder keeps the
    caption information alive until the UNet learns to read it.

    Tried and not kept (2026-12-02): ``transformer_proj`` at the full rate. On mini, guidance 1,
    384 samples each, shape right with it slowed / at full rate: seed 0 54% / 86%, seed 1
    19% / 19%, and 46% in a full pipeline run at full rate. Run-to-run variance dominates.
    """
    text = list(getattr(model, "text_encoder_parameters", list)())
    if text_lr_scale == 1.0 or not text:
        return [{"params": list(model.parameters()), "lr": lr}]
    chosen = {id(p) for p in text}
    rest = [p for p in model.parameters() if id(p) not in chosen]
    return [{"params": rest, "lr": lr}, {"params": text, "lr": lr * text_lr_scale}]


class GlideDiffusionModule(SkipsNonFiniteSteps, ClipsGradientsItself, pl.LightningModule):
    """Trains a GLIDE UNet with the hybrid loss; keeps an EMA of its weights.

    ``model_kwargs``: arguments of ``create_glide_model``; ``diffusion``: ``diffusion_steps`` and
    ``noise_schedule``; ``train``: the stage's TrainConfig as a plain dict.
    """

    def __init__(
        self,
        model_kwargs: dict[str, Any],
        diffusion: dict[str, Any],
        train: dict[str, Any],
        tokenizer_identity: str,
        init_state_dict: dict[str, Tensor] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.model_kwargs = dict(model_kwargs)
        self.diffusion_settings = dict(diffusion)
        self.train_cfg = dict(train)
        self.tokenizer_identity = tokenizer_identity
        self.seed = int(seed)
        self.model = create_glide_model(**self.model_kwargs)
        if init_state_dict is not None:
            self.model.load_state_dict(init_state_dict, strict=True)
        self.diffusion = create_diffusion(
            diffusion["diffusion_steps"],
            diffusion["noise_schedule"],
            prediction_type=diffusion.get("prediction_type", "epsilon"),
            low_res_residual=bool(diffusion.get("low_res_residual", False)),
            sigma_data=float(diffusion.get("sigma_data", 1.0)),
        )
        self.ema = EMA(self.model, train["ema_decay"])
        configure_for_training(
            self.model,
            use_checkpoint=bool(train["use_checkpoint"]),
            compile=bool(train["compile"]),
            compile_backend=str(train["compile_backend"]),
        )
        self.nonfinite = NonFiniteGuard(int(train["max_consecutive_nonfinite"]))
        self.recent: dict[str, deque[Tensor]] = {}  # the last steps' losses, kept on device

    # ------------------------------------------------------------------ training
    def conditioning(
        self, batch: dict[str, Tensor], x_start: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        """(model inputs other than x_t and t, which captions were dropped: bool [B]).

        The inputs are the caption (some replaced by the empty caption, with probability
        ``caption_drop_prob``, for classifier-free guidance) and the variant's own inputs.
        """
        tokens, mask = batch["tokens"], batch["mask"].bool()
        if self.model.config.get("instruct"):
            return self._instruct_conditioning(batch, tokens, mask)
        p_drop = float(self.train_cfg["caption_drop_prob"])
        dropped = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        if p_drop > 0:
            dropped = torch.rand(tokens.shape[0], device=tokens.device) < p_drop
            tokens, mask = drop_captions(tokens, mask, dropped)
        kwargs: dict[str, Tensor] = {"tokens": tokens, "mask": mask}
        if self.model.super_res:
            kwargs["low_res"] = images_to_model_range(batch["low_res"])
            if self.model.noise_cond_aug:  # Imagen: noised low-res input, level given to the model
                max_level = int(self.train_cfg["noise_aug_max_level"])
                levels = random_levels(tokens.shape[0], max_level, tokens.device)
                kwargs["low_res"] = noise_augment(self.diffusion, kwargs["low_res"], levels)
                kwargs["aug_level"] = levels
        if self.model.inpaint:
            kwargs["inpaint_image"] = x_start  # the model masks it itself
            kwargs["inpaint_mask"] = self.training_masks(x_start.shape[0], x_start.shape[-1])
        return kwargs, dropped

    def _instruct_conditioning(
        self, batch: dict[str, Tensor], tokens: Tensor, mask: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Instruction editing: the image to edit (zeros where dropped) and the instruction
        (the empty caption where dropped), each dropped alone or both, per the train section."""
        train = self.train_cfg
        drop_image, drop_text = condition_drops(
            tokens.shape[0],
            float(train["image_drop_prob"]),
            float(train["caption_drop_prob"]),
            float(train["joint_drop_prob"]),
            device=tokens.device,
        )
        tokens, mask = drop_captions(tokens, mask, drop_text)
        source = images_to_model_range(batch["source"])
        source = torch.where(drop_image[:, None, None, None], torch.zeros_like(source), source)
        return {"tokens": tokens, "mask": mask, "source_image": source}, drop_text

    def training_masks(self, batch_size: int, size: int) -> Tensor:
        """Random inpainting masks [B, 1, H, W] (1 = keep) from the configured mix.

        Drawn from a generator seeded by (seed, step, rank), so a resumed run draws the masks an
        uninterrupted run would have drawn, without keeping any generator state.
        """
        generator = torch.Generator().manual_seed(
            (self.seed * 1_000_003 + int(self.global_step)) * 1009 + int(self.global_rank)
        )
        masks, _ = random_masks(batch_size, size, self.train_cfg["masks"], generator)
        return masks.to(self.device)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        x_start = images_to_model_range(batch["image"])
        model_kwargs, dropped = self.conditioning(batch, x_start)
        t = torch.randint(0, self.diffusion.num_timesteps, (x_start.shape[0],), device=self.device)
        losses = self.diffusion.training_losses(
            self.model,
            x_start,
            t,
            model_kwargs=model_kwargs,
            p2_gamma=float(self.train_cfg["p2_gamma"]),
            p2_k=float(self.train_cfg["p2_k"]),
        )
        loss = losses["loss"].mean()
        if not self.keep_finite_step(loss):
            self.log(
                "train/nonfinite_steps", float(self.nonfinite.total), on_step=True, on_epoch=False
            )
            return None
        self._log_losses(losses, t, dropped)
        return loss

    def _log_losses(self, losses: dict[str, Tensor], t: Tensor, dropped: Tensor) -> None:
        """Log the step's mean losses (tensors: no host sync); on the steps Lightning sends to
        the logger, also the loss per timestep quartile and on kept/dropped captions."""
        values = {f"train/{name}": value.mean() for name, value in losses.items()}
        if self._is_logging_step():
            values.update(self._loss_breakdown(losses["loss"].detach(), t, dropped))
        values["train/nonfinite_steps"] = self.nonfinite.device_total()
        self.log_dict(values, prog_bar=False, on_step=True, on_epoch=False)
        self.log("loss", values["train/loss"], prog_bar=True, logger=False)
        for name in ("loss", "mse", "vb"):
            window = self.recent.setdefault(name, deque(maxlen=50))
            window.append(losses[name].detach().mean())

    def _is_logging_step(self) -> bool:
        """Whether Lightning sends this step's metrics to the logger (every log_every_n_steps)."""
        every = int(getattr(self.trainer, "log_every_n_steps", 1) or 1)
        return (int(self.global_step) + 1) % every == 0

    def _loss_breakdown(self, loss: Tensor, t: Tensor, dropped: Tensor) -> dict[str, Tensor]:
        """Mean loss per timestep quartile (train/loss_q0..3) and, with caption dropping, on
        kept (train/loss_cond) and dropped (train/loss_uncond) captions; groups this batch has
        no example of are left out."""
        quartile = (t * 4) // self.diffusion.num_timesteps  # [B] in 0..3
        groups = {f"train/loss_q{q}": quartile == q for q in range(4)}
        if float(self.train_cfg["caption_drop_prob"]) > 0:
            groups.update({"train/loss_cond": ~dropped, "train/loss_uncond": dropped})
        counts = torch.stack([g.sum() for g in groups.values()]).tolist()  # one host sync
        return {
            name: loss[selected].mean()
            for (name, selected), count in zip(groups.items(), counts, strict=True)
            if count
        }

    def on_fit_start(self) -> None:
        self.ema.place_like(self.model)  # the model's device; its shards under FSDP

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer step, then the EMA update (before any callback, e.g. checkpointing)."""
        super().optimizer_step(*args, **kwargs)
        self.ema.update(self.model, step=self.global_step)

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.train_cfg
        groups = text_lr_groups(self.model, float(cfg["lr"]), float(cfg["text_lr_scale"]))
        return lightning_optimizers(groups, cfg)

    # ------------------------------------------------------------------ state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["glide"] = {
            "ema": self.ema.state_dict(),
            **self.nonfinite.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "recent": {k: [float(x) for x in v] for k, v in self.recent.items()},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["glide"]
        self.ema.load_state_dict(state["ema"])
        self.nonfinite.load_state_dict(state)
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.recent = {
            k: deque((torch.tensor(x) for x in v), maxlen=50) for k, v in state["recent"].items()
        }

    # ------------------------------------------------------------------ outputs
    def ema_model(self) -> torch.nn.Module:
        """A copy of the network holding the EMA weights, in eval mode (for samples, export).

        Sharded (FSDP): an unsharded network of the gathered averages; every worker must call
        this, or at least ``self.ema.state_dict()``, which gathers them.
        """
        with torch.device("meta"):  # no initialisation: no random draws, nothing computed
            model = create_glide_model(**self.model_kwargs)
        model = model.to_empty(device=self.device)  # a fresh, eager (never compiled) network
        self.ema.copy_to(model)  # every state-dict entry: the whole network is written
        return model.eval()

    def final_losses(self) -> dict[str, float]:
        """Mean of the last (up to 50) steps' loss, mse and vb."""
        finite = {k: [x for x in map(float, v) if math.isfinite(x)] for k, v in self.recent.items()}
        return {k: sum(v) / len(v) for k, v in finite.items() if v}

    def model_file(
        self, *, mlflow_run_id: str, stage: str, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The model file payload with the EMA weights; ``extra``: provenance to record.
        Sharded (FSDP): every worker must call this (the averages are gathered)."""
        return model_file_payload(
            {
                k: v.float() if v.is_floating_point() else v
                for k, v in self.ema.state_dict().items()
            },
            self.model.config,
            diffusion=self.diffusion_settings,
            tokenizer=self.tokenizer_identity,
            step=int(self.global_step),
            mlflow_run_id=mlflow_run_id,
            stage=stage,
            extra={**(extra or {}), "nonfinite_steps": self.nonfinite_total},
        )
