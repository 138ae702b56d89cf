"""The evaluate stage's Lightning module: generation in ``test_step``, metrics as torchmetrics.

Each test batch holds evaluation captions with their real images (base and high resolution).
For every condition of the sweeps (the pretrained base model on its own, classifier-free guidance
at each scale, CLIP guidance at each scale) the module samples one image per caption and updates
that condition's FID, KID and CLIP score; on the first ``cascade_samples`` captions it runs the
cascade and the upsampler against bicubic; on the first ``inpaint_samples`` it edits the real
images with the fine-tuned inpainter and with the replacement-only baseline. Metric states are
sums and feature lists, so they reduce across Ray Train workers; the real side of FID/KID comes
from cached reference features, added on rank 0 only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from pipeline.evaluation.bootstrap import with_uncertainty
from pipeline.evaluation.clip_score import ClipScore
from pipeline.evaluation.fid_kid import (
    FeaturePassthrough,
    add_reference,
    fid_metric,
    kid_metric,
    sample_counts,
)
from pipeline.evaluation.inception_weights import load_fid_inception
from pipeline.evaluation.per_sample import PerSampleValues
from pipeline.evaluation.reference_stats import ReferenceFeatures
from pipeline.evaluation.scene_readout import CaptionFollowing
from pipeline.sampling import SamplerSettings


@dataclass(frozen=True)
class Condition:
    """One point of a guidance sweep: ``kind`` "cfg" (classifier-free), "clip", or "base" (the
    pretrained base model's own samples, scale 1: what pretraining alone gives)."""

    kind: str
    scale: float

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.scale:g}"


def sweep_conditions(
    settings: dict[str, Any], with_clip: bool, with_base: bool = False
) -> list[Condition]:
    """The sweep's conditions in report order: the base model (when given), every
    classifier-free scale, then CLIP scales."""
    conditions = [Condition("base", 1.0)] if with_base else []
    conditions += [Condition("cfg", float(s)) for s in settings["guidance_scales"]]
    if with_clip:
        conditions += [Condition("clip", float(s)) for s in settings["clip_guidance_scales"]]
    return conditions


def nchw(images: Tensor) -> Tensor:
    """uint8 [B, H, W, 3] -> uint8 [B, 3, H, W] (FID/KID's input)."""
    return images.permute(0, 3, 1, 2).contiguous()


def to_unit(images: Tensor) -> Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1] (the CLIP score's input)."""
    return nchw(images).float().div(127.5).sub(1.0)


class GlideEvaluationModule(pl.LightningModule):
    """Generates and measures; ``results`` holds the figures after ``trainer.test``.

    ``settings``: the ``evaluate`` config section as a dict. ``models``: SamplingModels
    ``"cfg"`` (required), ``"base"``, ``"upsampler"`` and ``"inpaint"`` (optional);
    ``noised_clip``: the guidance CLIP (optional: no CLIP sweep without it); ``eval_clip``: the
    CLIP that measures CLIP score (an ``EvalClip``). ``reference``: cached reference features
    ``"base"`` and ``"hires"``.
    """

    def __init__(
        self,
        settings: dict[str, Any],
        models: dict[str, Any],
        eval_clip: Any,
        reference: dict[str, ReferenceFeatures],
        noised_clip: Any = None,
        inception: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.settings = dict(settings)
        self.sampling_models = models
        for name, sampling_model in models.items():  # registered, so Lightning moves them
            self.add_module(f"net_{name}", sampling_model.model)
        self.noised_clip = noised_clip
        self.eval_clip = eval_clip
        self.reference = reference
        self.conditions = sweep_conditions(self.settings, noised_clip is not None, "base" in models)
        network = inception or load_fid_inception(self.settings.get("inception_weights") or None)
        self.inception = network.eval()  # run once per image batch; the metrics take features
        width = int(network.num_features)
        self._add_sweep_metrics(width)
        self._add_cascade_metrics(width, "upsampler" in models)
        self._add_inpaint_metrics(width, "inpaint" in models)
        self.per_sample = nn.ModuleDict(
            {
                name: PerSampleValues(self._value_shape(name, width))
                for name in self._per_sample_names()
            }
        )
        self.grids: dict[str, np.ndarray] = {}
        self.results: dict[str, Any] = {}

    def _add_sweep_metrics(self, width: int) -> None:
        """FID, KID, CLIP score and (on the embedded scenes) caption following per condition."""
        kid_size = min(int(self.settings["kid_subset_size"]), int(self.settings["num_samples"]))
        subsets = int(self.settings["kid_subsets"])
        names = [c.name for c in self.conditions]
        self.fid = nn.ModuleDict({k: fid_metric(FeaturePassthrough(width)) for k in names})
        self.kid = nn.ModuleDict(
            {k: kid_metric(FeaturePassthrough(width), kid_size, subsets) for k in names}
        )
        self.clip_score = nn.ModuleDict({k: ClipScore(self.eval_clip) for k in names})
        readout = self.settings.get("scene_readout")  # the embedded scenes' colours and shapes
        self.following = nn.ModuleDict(
            {k: CaptionFollowing(readout["colours"], readout["shapes"]) for k in names}
            if readout
            else {}
        )

    def _add_cascade_metrics(self, width: int, has_upsampler: bool) -> None:
        """FID of the cascade, the upsampler and bicubic; PSNR of the last two (empty: no run)."""
        self.cascade_fid = nn.ModuleDict()
        self.psnr = nn.ModuleDict()
        if has_upsampler and int(self.settings["cascade_samples"]):
            names = ("cascade", "upsampler", "bicubic")
            self.cascade_fid = nn.ModuleDict(
                {k: fid_metric(FeaturePassthrough(width)) for k in names}
            )
            self.psnr = nn.ModuleDict({k: MeanMetric() for k in ("upsampler", "bicubic")})

    def _add_inpaint_metrics(self, width: int, has_inpainter: bool) -> None:
        """Boundary-band error and region FID of the inpainter and of replacement."""
        self.band_error = nn.ModuleDict()
        self.region_fid = nn.ModuleDict()
        if has_inpainter and int(self.settings["inpaint_samples"]):
            self.band_error = nn.ModuleDict({k: MeanMetric() for k in ("finetuned", "replace")})
            self.region_fid = nn.ModuleDict(
                {k: fid_metric(FeaturePassthrough(width)) for k in ("finetuned", "replace")}
            )

    def _per_sample_names(self) -> list[str]:
        """What the bootstrap needs per sample: features and CLIP scores of every condition, the
        real pairs' CLIP embeddings (the evaluation CLIP's retrieval), cascade and inpainting
        values."""
        names = ["real_image_emb", "real_text_emb"]
        for condition in self.conditions:
            names += [f"{condition.name}_features", f"{condition.name}_clip"]
        if len(self.psnr):
            names += [f"{k}_features" for k in self.cascade_fid] + [
                "upsampler_psnr",
                "bicubic_psnr",
            ]
        if len(self.band_error):
            names += ["truth_region"]
            names += [f"{k}_{v}" for k in self.band_error for v in ("region", "band")]
        return names

    @staticmethod
    def _value_shape(name: str, width: int) -> tuple[int, ...] | None:
        if name.endswith(("features", "region")):
            return (width,)
        return None if name.endswith("emb") else ()

    def _record(self, name: str, index: Tensor, values: Tensor) -> None:
        self.per_sample[name].update(index, values)

    # ------------------------------------------------------------------ set-up
    def on_test_start(self) -> None:
        """The real side of FID/KID: cached reference features, on one worker only (states are
        summed across workers)."""
        self._started, self._done = time.monotonic(), 0
        if self.global_rank != 0:
            return
        for name in self.fid:
            add_reference(self.fid[name], self.reference["base"])
            add_reference(self.kid[name], self.reference["base"])
        if "hires" in self.reference:
            for metric in self.cascade_fid.values():
                add_reference(metric, self.reference["hires"])

    # ------------------------------------------------------------------ generation
    def sampler_settings(self, seed: int) -> SamplerSettings:
        """The base models' sampling settings for a batch seeded with ``seed``."""
        return SamplerSettings(
            steps=str(self.settings["sample_steps"]), seed=seed, device=self.device
        )

    def generate(self, condition: Condition, captions: list[str], seed: int) -> Tensor:
        """One image per caption under ``condition``: uint8 [B, H, W, 3] on the CPU."""
        from pipeline.sampling.clip_guided import sample_clip_guided
        from pipeline.sampling.text_to_image import sample_text_to_image

        sampler = self.sampling_models["base" if condition.kind == "base" else "cfg"]
        settings = self.sampler_settings(seed)
        if condition.kind == "clip":
            images = sample_clip_guided(
                sampler, self.noised_clip, captions, settings, clip_guidance_scale=condition.scale
            )
        else:
            images = sample_text_to_image(
                sampler, captions, settings, guidance_scale=condition.scale
            )
        return images.cpu()

    # ------------------------------------------------------------------ test loop
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        captions = [str(c) for c in batch["caption"]]
        indices = torch.as_tensor(batch["index"]).long()
        seed = int(self.settings["seed"]) + int(indices[0])
        samples: dict[str, Tensor] = {}
        for condition in self.conditions:
            images = self.generate(condition, captions, seed)
            samples[condition.name] = images
            self._update_sweep(condition.name, images, captions, indices)
            self._keep_for_grid(condition.name, images, indices)
        real = torch.as_tensor(batch["base"])
        self._keep_for_grid("real", real, indices)
        with torch.no_grad():
            self._record("real_image_emb", indices, self.eval_clip.encode_image(to_unit(real)))
            self._record("real_text_emb", indices, self.eval_clip.encode_text(captions))
        if len(self.psnr):
            self._cascade(batch, captions, indices, samples, seed)
        if len(self.band_error):
            self._inpainting(batch, captions, indices, seed)
        self._progress(len(captions))

    def _progress(self, count: int) -> None:
        """One line per batch (Ray workers print plain lines; no terminal for a bar)."""
        self._done += count
        total = -(-int(self.settings["num_samples"]) // max(1, self.trainer.world_size))
        elapsed = time.monotonic() - self._started
        print(
            f"[evaluate] rank {self.global_rank}: {self._done}/{total} captions, "
            f"{len(self.conditions)} conditions each, {elapsed:.0f} s",
            flush=True,
        )

    def _update_sweep(
        self, name: str, images: Tensor, captions: list[str], indices: Tensor
    ) -> None:
        features = self.features_of(images)
        self.fid[name].update(features, real=False)
        self.kid[name].update(features, real=False)
        scores = self.clip_score[name].per_image(to_unit(images).to(self.device), captions)
        self.clip_score[name].add_scores(scores)
        self._record(f"{name}_features", indices, features)
        self._record(f"{name}_clip", indices, scores)
        if name in self.following:
            self.following[name].update(images, captions)

    def features_of(self, images: Tensor) -> Tensor:
        """Inception features [B, D] of uint8 [B, H, W, 3] images, computed once for FID and
        KID alike."""
        return self.inception(nchw(images).to(self.device))

    def _keep_for_grid(self, name: str, images: Tensor, indices: Tensor) -> None:
        """The first ``grid_images`` evaluation captions' images of each condition."""
        wanted = indices < int(self.settings["grid_images"])
        if bool(wanted.any()):
            chosen = images[wanted.to(images.device)].cpu().numpy()
            previous = self.grids.get(name)
            self.grids[name] = chosen if previous is None else np.concatenate([previous, chosen])

    def _cascade(
        self,
        batch: dict[str, Any],
        captions: list[str],
        indices: Tensor,
        samples: dict[str, Tensor],
        seed: int,
    ) -> None:
        """Cascade FID at the high resolution; the upsampler against bicubic on real inputs."""
        from pipeline.evaluation.upsampling import bicubic_upsample, psnr
        from pipeline.sampling.tiles import Tiling
        from pipeline.sampling.upsample import sample_upsample

        rows = indices < int(self.settings["cascade_samples"])
        if not bool(rows.any()):
            return
        keep = [c for c, r in zip(captions, rows.tolist(), strict=True) if r]
        upsampler = self.sampling_models["upsampler"]
        settings = replace(
            self.sampler_settings(seed),
            steps=str(self.settings["upsample_steps"]),
            temperature=float(self.settings["upsample_temperature"]),
        )
        tiling = Tiling(
            int(self.settings["upsample_tile_size"]),
            int(self.settings["upsample_tile_stride"]),
            int(self.settings["upsample_tile_below_t"]),
        )
        cascade_name = Condition("cfg", float(self.settings["cascade_guidance"])).name
        low = samples.get(cascade_name)
        if low is None:
            low = self.generate(
                Condition("cfg", float(self.settings["cascade_guidance"])), keep, seed
            )
        else:
            low = low[rows]
        project = bool(self.settings["upsample_projection"])
        cascade = sample_upsample(upsampler, keep, low, settings, tiling=tiling, project=project)
        features = self.features_of(cascade.cpu())
        self.cascade_fid["cascade"].update(features, real=False)
        self._record("cascade_features", indices[rows], features)
        self._keep_for_grid("cascade", cascade.cpu(), indices[rows])

        real_low = torch.as_tensor(batch["base"])[rows]
        real_high = torch.as_tensor(batch["hires"])[rows].numpy()
        upsampled = sample_upsample(
            upsampler, keep, real_low, settings, tiling=tiling, project=project
        ).cpu()
        bicubic = torch.from_numpy(bicubic_upsample(real_low.numpy(), real_high.shape[1]))
        for name, images in (("upsampler", upsampled), ("bicubic", bicubic)):
            features = self.features_of(images)
            self.cascade_fid[name].update(features, real=False)
            values = torch.as_tensor(psnr(images.numpy(), real_high), dtype=torch.float32)
            self.psnr[name].update(values.to(self.device))
            self._record(f"{name}_features", indices[rows], features)
            self._record(f"{name}_psnr", indices[rows], values)

    def _inpainting(
        self, batch: dict[str, Any], captions: list[str], indices: Tensor, seed: int
    ) -> None:
        """The fine-tuned inpainter against the replacement-only baseline (the CFG model)."""
        from pipeline.evaluation.inpainting import compare_inpainting

        rows = indices < int(self.settings["inpaint_samples"])
        if not bool(rows.any()):
            return
        base_images = torch.as_tensor(batch["base"])
        examples = [
            {"base": base_images[i], "caption": captions[i]}
            for i in range(len(captions))
            if bool(rows[i])
        ]
        models = {
            "finetuned": self.sampling_models["inpaint"],
            "replace": self.sampling_models["cfg"],
        }
        compared = compare_inpainting(
            models,
            examples,
            replace(self.sampler_settings(seed), device=None),
            guidance_scale=float(self.settings["inpaint_guidance"]),
            band_width=int(self.settings["inpaint_band_width"]),
        )
        truth = self.features_of(torch.as_tensor(compared["ground_truth"]["region_crops"]))
        self._record("truth_region", indices[rows], truth)
        for name in models:
            result = compared[name]
            self.band_error[name].update(
                torch.tensor(float(result["band_error"]), device=self.device),
                weight=len(examples),
            )
            crops = self.features_of(torch.as_tensor(result["region_crops"]))
            self.region_fid[name].update(truth, real=True)
            self.region_fid[name].update(crops, real=False)
            self._record(f"{name}_region", indices[rows], crops)
            self._record(f"{name}_band", indices[rows], torch.as_tensor(result["band_errors"]))
            self._keep_for_grid(
                f"inpaint_{name}", torch.as_tensor(result["edited"]).cpu(), indices[rows]
            )

    # ------------------------------------------------------------------ results
    def on_test_epoch_end(self) -> None:
        """Compute every figure (all workers take part in the reduction)."""
        clip_name = self.eval_clip.metric_name
        sweeps = []
        for condition in self.conditions:
            fid, kid = self.fid[condition.name], self.kid[condition.name]
            kid_mean, kid_std = kid.compute()
            sweeps.append(
                {
                    "guidance": condition.kind,
                    "scale": condition.scale,
                    "fid": float(fid.compute()),
                    "kid": float(kid_mean),
                    "kid_std": float(kid_std),
                    clip_name: float(self.clip_score[condition.name].compute()),
                    **sample_counts(fid),
                    **(
                        self.following[condition.name].compute()
                        if condition.name in self.following
                        else {}
                    ),
                }
            )
        results: dict[str, Any] = {"clip_metric": clip_name, "sweeps": sweeps}
        if len(self.psnr):
            cascade = {f"fid_{k}": float(m.compute()) for k, m in self.cascade_fid.items()}
            cascade.update({f"psnr_{k}": float(m.compute()) for k, m in self.psnr.items()})
            cascade.update(sample_counts(self.cascade_fid["cascade"]))
            results["cascade"] = cascade
        if len(self.band_error):
            inpainting = {f"band_error_{k}": float(m.compute()) for k, m in self.band_error.items()}
            inpainting.update(
                {f"fid_region_{k}": float(m.compute()) for k, m in self.region_fid.items()}
            )
            inpainting.update(sample_counts(self.region_fid["finetuned"]))
            results["inpainting"] = inpainting
        self.results = with_uncertainty(results, self._gathered_values(), self.settings)

    def _gathered_values(self) -> dict[str, Any]:
        """Every per-sample value, gathered from all workers, in caption order."""
        for metric in self.per_sample.values():
            metric.fill_if_empty()
        got = {name: metric.compute() for name, metric in self.per_sample.items()}
        values: dict[str, Any] = {
            "real": self.reference["base"].features,
            "real_image_emb": got["real_image_emb"],
            "real_text_emb": got["real_text_emb"],
            "sweep_features": {c.name: got[f"{c.name}_features"] for c in self.conditions},
            "sweep_clip": {c.name: got[f"{c.name}_clip"] for c in self.conditions},
        }
        if len(self.psnr):
            values["real_hires"] = self.reference["hires"].features
            values["cascade_features"] = {k: got[f"{k}_features"] for k in self.cascade_fid}
            values["cascade_psnr"] = {k: got[f"{k}_psnr"] for k in self.psnr}
        if len(self.band_error):
            values["inpaint_truth"] = got["truth_region"]
            values["inpaint_regions"] = {k: got[f"{k}_region"] for k in self.band_error}
            values["inpaint_band"] = {k: got[f"{k}_band"] for k in self.band_error}
        return values
