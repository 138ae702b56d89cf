"""Bootstrap replicates of every evaluation figure, from the per-sample values the module keeps.

Figures are named as in MLflow (``cfg_3/fid``, ``cfg_3/clip_score_proxy``,
``cascade/psnr_upsampler``, ``inpainting/fid_region_finetuned``). One index draw per sample set
(the sweep's captions, the cascade's, the inpainting edits) is shared by every figure of that
set, so differences between conditions are paired.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from pipeline.evaluation.uncertainty import (
    bootstrap_fid,
    bootstrap_indices,
    bootstrap_mean,
    centred_interval,
    frechet_distance,
    normal_quantile,
    wilson_interval,
)

Replicates = dict[str, np.ndarray]


def sweep_replicates(
    real: Tensor,
    features: dict[str, Tensor],
    clip_scores: dict[str, Tensor],
    clip_name: str,
    indices: Tensor,
) -> Replicates:
    """FID and CLIP score of each sweep condition on each resampled caption set; ``real``
    [N, D] are the evaluation images' features in caption order (paired with the samples)."""
    out: Replicates = {}
    for name, fake in features.items():
        out[f"{name}/fid"] = bootstrap_fid(real, fake, indices)
        out[f"{name}/{clip_name}"] = bootstrap_mean(clip_scores[name], indices)
    return out


def unpaired_fid(real: Tensor, fake: Tensor, real_idx: Tensor, fake_idx: Tensor) -> np.ndarray:
    """FID with the two sides resampled separately (sets of different sizes)."""
    return np.array(
        [frechet_distance(real[r], fake[f]) for r, f in zip(real_idx, fake_idx, strict=True)]
    )


def cascade_replicates(
    real_hires: Tensor,
    features: dict[str, Tensor],
    psnr: dict[str, Tensor],
    real_idx: Tensor,
    fake_idx: Tensor,
) -> Replicates:
    """High-resolution FIDs (against every evaluation image) and PSNRs of the cascade part."""
    out: Replicates = {}
    for name, fake in features.items():
        out[f"cascade/fid_{name}"] = unpaired_fid(real_hires, fake, real_idx, fake_idx)
    for name, values in psnr.items():
        out[f"cascade/psnr_{name}"] = bootstrap_mean(values, fake_idx)
    return out


def inpainting_replicates(
    truth: Tensor, regions: dict[str, Tensor], band_errors: dict[str, Tensor], indices: Tensor
) -> Replicates:
    """Region FIDs (against the true regions of the same edits) and boundary errors."""
    out: Replicates = {}
    for name, fake in regions.items():
        out[f"inpainting/fid_region_{name}"] = bootstrap_fid(truth, fake, indices)
        out[f"inpainting/band_error_{name}"] = bootstrap_mean(band_errors[name], indices)
    return out


def all_replicates(
    values: dict[str, Any], clip_name: str, replicates: int, seed: int
) -> Replicates:
    """Every figure's replicates from the module's gathered per-sample ``values``:

    ``real`` / ``real_hires`` [N, D]; ``sweep_features`` and ``sweep_clip``: condition ->
    [N, D] / [N]; optional ``cascade_features`` (name -> [M, D]), ``cascade_psnr``;
    optional ``inpaint_truth`` [K, D], ``inpaint_regions``, ``inpaint_band``.
    """
    n = int(values["real"].shape[0])
    sweep_idx = bootstrap_indices(n, replicates, seed)
    out = sweep_replicates(
        values["real"], values["sweep_features"], values["sweep_clip"], clip_name, sweep_idx
    )
    if values.get("cascade_features"):
        m = int(next(iter(values["cascade_features"].values())).shape[0])
        cascade_idx = bootstrap_indices(m, replicates, seed + 1)
        out.update(
            cascade_replicates(
                values["real_hires"],
                values["cascade_features"],
                values["cascade_psnr"],
                sweep_idx,
                cascade_idx,
            )
        )
    if values.get("inpaint_regions"):
        k = int(values["inpaint_truth"].shape[0])
        out.update(
            inpainting_replicates(
                values["inpaint_truth"],
                values["inpaint_regions"],
                values["inpaint_band"],
                bootstrap_indices(k, replicates, seed + 2),
            )
        )
    return out


def _set_interval(figures: dict[str, Any], key: str, interval: tuple[float, float]) -> None:
    figures[f"{key}_low"], figures[f"{key}_high"] = interval


def with_uncertainty(
    results: dict[str, Any], values: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    """``results`` with an interval (``<figure>_low`` / ``_high``) next to every figure, the
    evaluation CLIP's retrieval on the real pairs, and the bootstrap ``replicates`` the claims
    are judged on (kept out of ``metrics/eval.json``)."""
    from pipeline.evaluation.clip_score import clip_retrieval

    confidence = float(settings["confidence"])
    clip = results["clip_metric"]
    replicates = all_replicates(
        values, clip, int(settings["bootstrap_replicates"]), int(settings["seed"])
    )
    z = normal_quantile(confidence)
    for row in results["sweeps"]:
        name = f"{row['guidance']}_{row['scale']:g}"
        for key in ("fid", clip):
            _set_interval(
                row, key, centred_interval(row[key], replicates[f"{name}/{key}"], confidence)
            )
        _set_interval(
            row, "kid", (row["kid"] - z * row["kid_std"], row["kid"] + z * row["kid_std"])
        )
        if "readout_scored" in row:
            scored = int(row["readout_scored"])
            for key in ("colour_accuracy", "shape_accuracy", "both_accuracy"):
                hits = round(row[key] * scored) if scored else 0
                _set_interval(row, key, wilson_interval(hits, scored, confidence))
    for part in ("cascade", "inpainting"):
        figures = results.get(part, {})
        for key in list(figures):
            series = replicates.get(f"{part}/{key}")
            if series is not None:
                _set_interval(figures, key, centred_interval(figures[key], series, confidence))
    retrieval = clip_retrieval(values["real_image_emb"], values["real_text_emb"])
    _set_interval(
        retrieval, "accuracy", wilson_interval(retrieval["hits"], retrieval["pairs"], confidence)
    )
    return {
        **results,
        "eval_clip_retrieval": retrieval,
        "uncertainty": {
            "confidence": confidence,
            "bootstrap_replicates": int(settings["bootstrap_replicates"]),
            "min_claim_samples": int(settings["min_claim_samples"]),
            "interval": "bootstrap spread around the estimate; KID: its std over subsets; "
            "rates: Wilson",
        },
        "replicates": {k: v.tolist() for k, v in replicates.items()},
    }
