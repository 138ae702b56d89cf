"""Lightning callbacks of the diffusion stages: sample grids, a step-based progress bar."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

from pipeline.sampling import captioned_grid, sample_text_to_image
from pipeline.text import Tokenizer


class StepProgressBar(TQDMProgressBar):
    """A progress bar over optimizer steps (the data stream has no length)."""

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.max_steps


class SampleGridCallback(pl.Callback):
    """Every ``every_n_steps`` (and at the end), sample fixed prompts with the EMA weights at each
    guidance scale and log the captioned grid to MLflow (``samples/step_XXXXXXX.png``).

    Sampling uses its own seeded generator, so training randomness is unaffected.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        prompts: list[str],
        guidance_scales: list[float],
        *,
        every_n_steps: int,
        steps: str,
        seed: int,
        log_image: Any = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.prompts = list(prompts)
        self.guidance_scales = [float(s) for s in guidance_scales] or [1.0]
        self.every_n_steps = int(every_n_steps)
        self.steps = steps
        self.seed = seed
        self.log_image = log_image  # callable(PIL image, artifact_file) or None
        self.last_grid = None
        self._done_step = -1

    def make_grid(self, module: Any) -> Any:
        model = module.ema_model()
        images, captions = [], []
        for scale in self.guidance_scales:
            out = sample_text_to_image(
                model,
                self.tokenizer,
                self.prompts,
                guidance_scale=scale,
                steps=self.steps,
                diffusion_steps=module.diffusion_settings["diffusion_steps"],
                noise_schedule=module.diffusion_settings["noise_schedule"],
                seed=self.seed,
                device=module.device,
            )
            images.extend(out.numpy())
            captions.extend(f"[s={scale:g}] {p}" for p in self.prompts)
        return captioned_grid(images, captions, columns=len(self.prompts))

    def _maybe_sample(self, trainer: pl.Trainer, module: Any, force: bool) -> None:
        step = trainer.global_step
        if not self.prompts or not trainer.is_global_zero or step == self._done_step:
            return
        if not force and (self.every_n_steps <= 0 or step % self.every_n_steps != 0):
            return
        self._done_step = step
        self.last_grid = self.make_grid(module)
        if self.log_image is not None:
            self.log_image(self.last_grid, f"samples/step_{step:07d}.png")

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, *args: Any) -> None:
        self._maybe_sample(trainer, module, force=False)

    def on_train_end(self, trainer: pl.Trainer, module: Any) -> None:
        self._maybe_sample(trainer, module, force=True)
