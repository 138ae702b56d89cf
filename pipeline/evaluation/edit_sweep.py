"""Instruction edits swept over the two guidance scales, read out on held-out triples, and the
InstructPix2Pix trade-off claims judged with paired bootstrap intervals.

Every (s_I, s_T) edits the same triples with the same seed, so differences between two settings
are paired: the claims resample triples, not settings. Per setting: the edit success rate with
its Wilson interval and the mean preservation error with its bootstrap interval
(:mod:`pipeline.evaluation.edit_readout`).

Claims (InstructPix2Pix Fig. 7): raising s_I preserves more (lower preservation error) and edits
less; raising s_T edits more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pipeline.diffusion import SamplerSettings
from pipeline.evaluation.edit_readout import edit_succeeded, preservation_error
from pipeline.evaluation.uncertainty import (
    bootstrap_indices,
    bootstrap_mean,
    centred_interval,
    wilson_interval,
)
from pipeline.sampling.instruct_edit import sample_instruct_edit
from pipeline.sampling.loading import SamplingModel


def read_edits(edits: np.ndarray, triples: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per triple: ``success`` (0/1) and ``preservation_error`` of uint8 ``edits`` [N, H, W, 3]."""
    success, error = [], []
    for image, triple in zip(edits, triples, strict=True):
        edit, scene = triple["meta"]["edit"], triple["meta"]["source_scene"]
        success.append(float(edit_succeeded(image, edit, scene)))
        error.append(preservation_error(image, triple["source"], edit, scene))
    return {"success": np.asarray(success), "preservation_error": np.asarray(error)}


def edit_sweep(
    sampler: SamplingModel,
    triples: Sequence[dict[str, Any]],
    settings: SamplerSettings,
    scales: Sequence[tuple[float, float]],
) -> dict[tuple[float, float], dict[str, np.ndarray]]:
    """Per (s_I, s_T): the per-triple read-out of one edit per triple (``triples``: dicts with
    ``source`` uint8 [H, W, 3], ``caption`` (the instruction) and ``meta`` (edit, source scene))."""
    out = {}
    for image_scale, text_scale in scales:
        edits = [
            sample_instruct_edit(sampler, [t["caption"]], torch.from_numpy(t["source"]), settings,
                                 image_guidance=image_scale, guidance=text_scale)[0].numpy()
            for t in triples
        ]  # fmt: skip
        out[(float(image_scale), float(text_scale))] = read_edits(np.stack(edits), triples)
    return out


def sweep_rows(
    per_setting: dict[tuple[float, float], dict[str, np.ndarray]],
    confidence: float,
    replicates: int,
    seed: int,
) -> list[dict[str, Any]]:
    """One row per setting: success rate [Wilson interval], preservation error [bootstrap]."""
    rows = []
    for (image_scale, text_scale), values in per_setting.items():
        n, hits = len(values["success"]), int(values["success"].sum())
        error = torch.from_numpy(values["preservation_error"])
        low, high = wilson_interval(hits, n, confidence)
        indices = bootstrap_indices(n, replicates, seed)
        mean_error = float(error.mean())
        e_low, e_high = centred_interval(mean_error, bootstrap_mean(error, indices), confidence)
        rows.append({
            "image_guidance": image_scale, "text_guidance": text_scale, "triples": n,
            "edit_success": hits / n, "edit_success_low": low, "edit_success_high": high,
            "preservation_error": mean_error, "preservation_error_low": e_low,
            "preservation_error_high": e_high,
        })  # fmt: skip
    return rows


def paired_difference(
    better: np.ndarray, worse: np.ndarray, confidence: float, replicates: int, seed: int
) -> tuple[float, float, float]:
    """Mean of ``better - worse`` over triples and its bootstrap interval (paired)."""
    diff = torch.from_numpy(np.asarray(better, np.float64) - np.asarray(worse, np.float64))
    point = float(diff.mean())
    low, high = centred_interval(
        point, bootstrap_mean(diff, bootstrap_indices(len(diff), replicates, seed)), confidence
    )
    return point, low, high
