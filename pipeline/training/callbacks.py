"""Lightning callbacks of the diffusion stages: sample grids, a step-based progress log."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import lightning.pytorch as pl
import torch

from pipeline.sampling import (
    SamplerSettings,
    SamplingModel,
    captioned_grid,
    sample_text_to_image,
)
from pipeline.sampling.inpaint import sample_inpaint
from pipeline.sampling.instruct_edit import sample_instruct_edit
from pipeline.sampling.tiles import Tiling
from pipeline.sampling.upsample import WHOLE_IMAGE, sample_upsample
from pipeline.text import Tokenizer


class StepProgressLog(pl.Callback):
    """Progress as one line every ``every_n_steps`` steps: step/max, loss, images/s, ETA.

    Ray forwards worker output line by line, so a line log shows progress where a carriage-return
    progress bar would stay invisible until the end.
    """

    def __init__(self, every_n_steps: int, batch_size: int, stage: str) -> None:
        self.every_n_steps = max(1, int(every_n_steps))
        self.batch_size = int(batch_size)
        self.stage = stage
        self._t0 = 0.0
        self._step0 = 0
        self._last = (0.0, 0)

    def on_train_start(self, trainer: pl.Trainer, module: Any) -> None:
        self._t0, self._step0 = time.monotonic(), trainer.global_step
        self._last = (self._t0, self._step0)
        if trainer.is_global_zero and self._step0:
            print(f"[{self.stage}] resuming at step {self._step0}/{trainer.max_steps}", flush=True)

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, *args: Any) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or (step % self.every_n_steps and step != trainer.max_steps):
            return
        now = time.monotonic()
        elapsed = max(now - self._t0, 1e-9)
        done = max(step - self._step0, 1)
        eta = (trainer.max_steps - step) * elapsed / done
        last_time, last_step = self._last
        rate = max(step - last_step, 1) * self.batch_size / max(now - last_time, 1e-9)
        self._last = (now, step)
        loss = trainer.callback_metrics.get("loss")
        loss_text = f" loss {float(loss):.4f}" if loss is not None else ""
        print(
            f"[{self.stage}] step {step}/{trainer.max_steps}{loss_text} "
            f"{rate:.1f} img/s, eta {eta / 60:.1f} min",
            flush=True,
        )


@dataclass(frozen=True)
class UpsampleGrid:
    """A super-resolution model's sample grid: held-out ``{"base", "hires", "caption"}``
    (their captions prompt), upsampled at ``temperature`` (the initial noise's scale) and
    low-res augmentation level ``aug_level`` (models with noise conditioning augmentation),
    the network run on ``tiling``'s tiles (a model trained on crops: their size) and its x0
    predictions projected onto the low-res input with ``project`` (low_res_projection.py)."""

    sources: list[dict[str, Any]]
    temperature: float
    aug_level: int
    tiling: Tiling = WHOLE_IMAGE
    project: bool = False


@dataclass(frozen=True)
class InstructGrid:
    """An instruction-editing model's sample grid: held-out ``{"source", "caption"}`` (the
    image to edit and its instruction), edited at each image scale times each guidance scale."""

    sources: list[dict[str, Any]]
    image_scales: list[float]


class SampleGridCallback(pl.Callback):
    """Every ``every_n_steps`` (and at the end), sample fixed prompts with the EMA weights at each
    guidance scale and log the captioned grid to MLflow (``samples/step_XXXXXXX.png``). Rank 0
    samples; with sharded (FSDP) weights the other workers help gather the EMA weights first.

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
        edit_sources: list[Any] | None = None,
        upsample: UpsampleGrid | None = None,
        instruct: InstructGrid | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.prompts = list(prompts)
        self.guidance_scales = [float(s) for s in guidance_scales] or [1.0]
        self.every_n_steps = int(every_n_steps)
        self.settings = SamplerSettings(steps=steps, seed=seed)
        self.log_image = log_image  # callable(PIL image, artifact_file) or None
        self.edit_sources = list(edit_sources or [])  # uint8 HWC images, for inpainting models
        self.upsample = upsample  # super-resolution models: its sources' captions prompt
        self.instruct = instruct  # instruction-editing models: its sources' instructions
        if instruct is not None:
            self.prompts = [str(source["caption"]) for source in instruct.sources]
        if upsample is not None:
            self.prompts = [str(source["caption"]) for source in upsample.sources]
        self.last_grid = None
        self._done_step = -1

    def make_grid(self, module: Any) -> Any:
        sampler = SamplingModel.of_network(
            module.ema_model(), self.tokenizer, module.diffusion_settings
        )
        settings = replace(self.settings, device=module.device)
        if sampler.model.super_res:
            return self.make_upsample_grid(sampler, settings)
        if sampler.model.config.get("instruct"):
            return self.make_instruct_grid(sampler, settings)
        if sampler.model.inpaint:
            return self.make_edit_grid(sampler, settings)
        images, captions = [], []
        for scale in self.guidance_scales:
            out = sample_text_to_image(sampler, self.prompts, settings, guidance_scale=scale)
            images.extend(out.numpy())
            captions.extend(f"[s={scale:g}] {p}" for p in self.prompts)
        return captioned_grid(images, captions, columns=len(self.prompts))

    def make_edit_grid(self, sampler: SamplingModel, settings: SamplerSettings) -> Any:
        """Inpainting models: each prompt edits a held-out image whose centre is erased; the
        grid shows the masked source above each edit."""
        if not self.edit_sources:
            raise ValueError("an inpainting model's sample grid needs edit_sources")
        size = int(sampler.model.image_size)
        keep = torch.ones(size, size, dtype=torch.bool)
        keep[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = False
        sources, edits, captions = [], [], []
        for index, prompt in enumerate(self.prompts):
            source = torch.as_tensor(self.edit_sources[index % len(self.edit_sources)])
            for scale in self.guidance_scales:
                edited = sample_inpaint(
                    sampler, [prompt], source, keep, settings, guidance_scale=scale
                )
                sources.append((source * keep[..., None]).numpy())
                edits.append(edited[0].numpy())
                captions.append(f"[edit s={scale:g}] {prompt}")
        columns = len(captions)
        return captioned_grid(
            sources + edits, ["(masked source)"] * columns + captions, columns=columns
        )

    def make_instruct_grid(self, sampler: SamplingModel, settings: SamplerSettings) -> Any:
        """Instruction-editing models: one row per held-out image, the input then its edits at
        each (image scale, instruction scale)."""
        if self.instruct is None or not self.instruct.sources:
            raise ValueError("an instruction-editing model's sample grid needs instruct sources")
        images, captions = [], []
        for source in self.instruct.sources:
            image, instruction = torch.as_tensor(source["source"]), str(source["caption"])
            images.append(source["source"])
            captions.append("(input)")
            for image_scale in self.instruct.image_scales:
                for scale in self.guidance_scales:
                    edited = sample_instruct_edit(sampler, [instruction], image, settings,
                                                  image_guidance=image_scale, guidance=scale)  # fmt: skip
                    images.append(edited[0].numpy())
                    captions.append(f"[s_I={image_scale:g} s_T={scale:g}] {instruction}")
        columns = 1 + len(self.instruct.image_scales) * len(self.guidance_scales)
        cell = min(256, max(128, int(sampler.model.image_size)))
        return captioned_grid(images, captions, columns=columns, cell=cell)

    def make_upsample_grid(self, sampler: SamplingModel, settings: SamplerSettings) -> Any:
        """Super-resolution models: one row per held-out image, low-res input | upsampled |
        ground truth."""
        if self.upsample is None or not self.upsample.sources:
            raise ValueError("a super-resolution model's sample grid needs upsample sources")
        sources = self.upsample.sources
        low = torch.stack([torch.as_tensor(s["base"]) for s in sources])
        settings = replace(settings, temperature=self.upsample.temperature)
        upsampled = sample_upsample(
            sampler,
            self.prompts,
            low,
            settings,
            aug_level=self.upsample.aug_level,
            tiling=self.upsample.tiling,
            project=self.upsample.project,
        )
        images, captions = [], []
        for source, output in zip(sources, upsampled.numpy(), strict=True):
            images += [source["base"], output, source["hires"]]
            captions += ["(low-res input)", str(source["caption"]), "(ground truth)"]
        cell = min(256, max(128, int(sampler.model.image_size)))
        return captioned_grid(images, captions, columns=3, cell=cell)

    def sample_now(self, module: Any, is_global_zero: bool) -> None:
        """Make (rank 0) and log the grid of the current step unless it was made already. Every
        worker calls this at the same steps: sharded (FSDP) EMA weights are gathered by all."""
        step = int(module.global_step)
        if not self.prompts or step == self._done_step:
            return
        self._done_step = step
        if not is_global_zero:
            if module.ema.sharded:
                module.ema.state_dict()  # rank 0's ema_model() gathers with us
            return
        self.last_grid = self.make_grid(module)
        if self.log_image is not None:
            self.log_image(self.last_grid, f"samples/step_{step:07d}.png")

    def _maybe_sample(self, trainer: pl.Trainer, module: Any, force: bool) -> None:
        step = trainer.global_step
        if not force and (self.every_n_steps <= 0 or step % self.every_n_steps != 0):
            return
        self.sample_now(module, trainer.is_global_zero)

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, *args: Any) -> None:
        self._maybe_sample(trainer, module, force=False)

    def on_train_end(self, trainer: pl.Trainer, module: Any) -> None:
        self._maybe_sample(trainer, module, force=True)
