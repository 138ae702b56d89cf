"""Upsampler metrics: PSNR against the ground truth, for the upsampler and for bicubic
upsampling of the same low-res inputs, plus the images (for FID at the high resolution, computed
by the evaluation stage with pipeline/evaluation/fid.py).

Held-out pairs come from the shards (``held_out_examples(..., images=("base", "hires"))``): the
low-res ``base`` image is the area average of the high-res ``hires`` one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.sampling import SamplerSettings, SamplingModel
from pipeline.sampling.tiles import Tiling
from pipeline.sampling.upsample import GLIDE_UPSAMPLE_SETTINGS, WHOLE_IMAGE, sample_upsample

PSNR_CAP_DB = 100.0  # identical images: a finite value, so means and JSON stay usable
EVALUATION_SETTINGS = replace(GLIDE_UPSAMPLE_SETTINGS, batch_size=16)


def psnr(prediction: Any, target: Any) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images [N, H, W, C] (or one [H, W, C]) against ``target``,
    peak 255, capped at ``PSNR_CAP_DB``."""
    pred = np.asarray(prediction, dtype=np.float64)
    true = np.asarray(target, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"prediction {pred.shape} and target {true.shape} differ in shape")
    if pred.ndim == 3:
        pred, true = pred[None], true[None]
    mse = ((pred - true) ** 2).reshape(pred.shape[0], -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(255.0**2 / mse)
    return np.minimum(values, PSNR_CAP_DB)


def bicubic_upsample(low_res: Any, size: int) -> np.ndarray:
    """uint8 [N, h, w, 3] -> uint8 [N, size, size, 3] by bicubic interpolation as torch does it
    (Keys' a = -0.75: the upsampling a residual upsampler builds on), clipped and rounded as
    samples are. PIL's bicubic (a = -0.5) scores ~0.15 dB lower on the embedded scenes, so this
    is the stronger baseline."""
    images = torch.from_numpy(np.asarray(low_res, dtype=np.uint8)).permute(0, 3, 1, 2)
    upsampled = F.interpolate(
        images.double(), size=(size, size), mode="bicubic", align_corners=False
    )
    return upsampled.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@dataclass
class UpsamplingEvaluation:
    """PSNR (dB, mean over images) of the upsampler and of bicubic upsampling, per-image values,
    and the images: uint8 [N, H, W, 3] each."""

    psnr_upsampler: float
    psnr_bicubic: float
    per_image_upsampler: np.ndarray
    per_image_bicubic: np.ndarray
    upsampled: np.ndarray
    bicubic: np.ndarray
    reference: np.ndarray

    def metrics(self) -> dict[str, float]:
        """The scalars for a metrics JSON / MLflow."""
        return {
            "psnr_upsampler": self.psnr_upsampler,
            "psnr_bicubic": self.psnr_bicubic,
            "psnr_gain_over_bicubic": self.psnr_upsampler - self.psnr_bicubic,
            "num_images": float(len(self.reference)),
        }


def evaluate_upsampling(
    upsampler: SamplingModel,
    pairs: Sequence[Mapping[str, Any]],
    settings: SamplerSettings = EVALUATION_SETTINGS,
    *,
    aug_level: int = 0,
    tiling: Tiling = WHOLE_IMAGE,
    project: bool = False,
) -> UpsamplingEvaluation:
    """Upsample every pair's ``base`` (uint8 [h, w, 3]) with its ``caption`` (the network run on
    ``tiling``'s tiles, x0 projected onto the low-res input with ``project``) and compare with its ``hires`` (uint8 [H, W, 3]); the same for bicubic
    upsampling."""
    if not pairs:
        raise ValueError("no held-out pairs to evaluate")
    size = int(upsampler.model.image_size)
    for index, pair in enumerate(pairs):
        if tuple(np.shape(pair["hires"])) != (size, size, 3):
            raise ValueError(
                f"pair {index}: high-res image {np.shape(pair['hires'])} does not match the "
                f"upsampler's {size}x{size}"
            )
    low = np.stack([np.asarray(pair["base"], dtype=np.uint8) for pair in pairs])
    reference = np.stack([np.asarray(pair["hires"], dtype=np.uint8) for pair in pairs])
    captions = [str(pair["caption"]) for pair in pairs]
    low_res = torch.from_numpy(low)
    upsampled = sample_upsample(
        upsampler, captions, low_res, settings, aug_level=aug_level, tiling=tiling, project=project
    ).numpy()
    bicubic = bicubic_upsample(low, size)
    per_model, per_bicubic = psnr(upsampled, reference), psnr(bicubic, reference)
    return UpsamplingEvaluation(
        psnr_upsampler=float(per_model.mean()),
        psnr_bicubic=float(per_bicubic.mean()),
        per_image_upsampler=per_model,
        per_image_bicubic=per_bicubic,
        upsampled=upsampled,
        bicubic=bicubic,
        reference=reference,
    )
