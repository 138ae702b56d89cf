"""Instruction edits swept over the two guidance scales, read out on held-out triples, and the
InstructPix2Pix trade-off claims judged with paired bootstrap intervals.

Every (s_I, s_T) edits the same triples with the same seed, so differences between two settings
are paired: the claims resample triples, not settings. Per setting: the rates of edit success,
of kept other objects and of clean edits (both) with Wilson intervals, and the mean
preservation error with its bootstrap interval (:mod:`pipeline.evaluation.edit_readout`).

Claims (InstructPix2Pix Fig. 7): raising s_I preserves more (lower preservation error) and edits
less; raising s_T edits more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pipeline.diffusion import SamplerSettings
from pipeline.evaluation.edit_readout import edit_succeeded, others_kept, preservation_error
from pipeline.evaluation.report import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_MEASURABLE,
    REPRODUCED,
    Claim,
    both_hold,
)
from pipeline.evaluation.uncertainty import (
    bootstrap_indices,
    bootstrap_mean,
    centred_interval,
    wilson_interval,
)
from pipeline.sampling.instruct_edit import sample_instruct_edit
from pipeline.sampling.loading import SamplingModel

CLAIM_STATEMENTS = {  # in axis order: s_I, s_T
    "image_scale_preserves": "raising the image scale s_I preserves more and edits less",
    "text_scale_edits": "raising the instruction scale s_T edits more",
}


def read_edits(edits: np.ndarray, triples: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per triple of uint8 ``edits`` [N, H, W, 3]: ``success`` (0/1), ``others_kept`` (0/1, NaN
    where the edit leaves no other object) and ``preservation_error``."""
    success, kept, error = [], [], []
    for image, triple in zip(edits, triples, strict=True):
        edit, scene = triple["meta"]["edit"], triple["meta"]["source_scene"]
        success.append(float(edit_succeeded(image, edit, scene)))
        others = others_kept(image, edit, scene)
        kept.append(np.nan if others is None else float(others))
        error.append(preservation_error(image, triple["source"], edit, scene))
    return {
        "success": np.asarray(success),
        "others_kept": np.asarray(kept),
        "preservation_error": np.asarray(error),
    }


def edit_sweep(
    sampler: SamplingModel,
    triples: Sequence[dict[str, Any]],
    settings: SamplerSettings,
    scales: Sequence[tuple[float, float]],
) -> dict[tuple[float, float], dict[str, np.ndarray]]:
    """Per (s_I, s_T): the per-triple read-out of one edit per triple (``triples``: dicts with
    ``source`` uint8 [H, W, 3], ``caption`` (the instruction) and ``meta`` (edit, source scene))
    and the ``edits`` (uint8 [N, H, W, 3]), all triples in one sampling call per setting
    (``settings.batch_size`` per network batch)."""
    instructions = [t["caption"] for t in triples]
    sources = torch.from_numpy(np.stack([t["source"] for t in triples]))
    out = {}
    for image_scale, text_scale in scales:
        edits = sample_instruct_edit(sampler, instructions, sources, settings,
                                     image_guidance=image_scale, guidance=text_scale)  # fmt: skip
        readout = read_edits(edits.numpy(), triples)
        out[(float(image_scale), float(text_scale))] = {**readout, "edits": edits.numpy()}
    return out


def _rate(name: str, hits: int, n: int, confidence: float) -> dict[str, float | None]:
    """``name``: hits / n with its Wilson interval; None for all three when n is 0."""
    if n == 0:
        return {name: None, f"{name}_low": None, f"{name}_high": None}
    low, high = wilson_interval(hits, n, confidence)
    return {name: hits / n, f"{name}_low": low, f"{name}_high": high}


def summary_row(
    values: dict[str, np.ndarray], confidence: float, replicates: int, seed: int
) -> dict[str, Any]:
    """Of some triples' read-out: the success rate, the rate of triples whose other objects are
    all kept (of those with any), the rate of clean edits (success with every other object
    kept) [Wilson intervals], and the mean preservation error [bootstrap]."""
    success = np.asarray(values["success"]) > 0.5
    kept = np.asarray(values["others_kept"], np.float64)
    scored = ~np.isnan(kept)
    clean = success & (~scored | (kept > 0.5))
    mean_error, e_low, e_high = mean_interval(
        values["preservation_error"], confidence, replicates, seed
    )
    return {
        "triples": len(success),
        **_rate("edit_success", int(success.sum()), len(success), confidence),
        **_rate("clean_edit", int(clean.sum()), len(success), confidence),
        "others_scored": int(scored.sum()),
        **_rate("others_kept", int((kept[scored] > 0.5).sum()), int(scored.sum()), confidence),
        "preservation_error": mean_error,
        "preservation_error_low": e_low,
        "preservation_error_high": e_high,
    }


def sweep_rows(
    per_setting: dict[tuple[float, float], dict[str, np.ndarray]],
    confidence: float,
    replicates: int,
    seed: int,
) -> list[dict[str, Any]]:
    """One row per setting: success rate [Wilson interval], preservation error [bootstrap]."""
    return [
        {
            "image_guidance": image_scale,
            "text_guidance": text_scale,
            **summary_row(values, confidence, replicates, seed),
        }
        for (image_scale, text_scale), values in per_setting.items()
    ]


def kind_rows(
    values: dict[str, np.ndarray],
    triples: Sequence[dict[str, Any]],
    confidence: float,
    replicates: int,
    seed: int,
) -> list[dict[str, Any]]:
    """One row per edit kind of one setting's read-out of ``triples`` (in the read-out's order)."""
    labels = np.asarray([t["meta"]["edit"]["kind"] for t in triples])
    rows = []
    for kind in sorted(set(labels.tolist())):
        chosen = {key: np.asarray(series)[labels == kind] for key, series in values.items()}
        rows.append({"kind": kind, **summary_row(chosen, confidence, replicates, seed)})
    return rows


def mean_interval(
    values: np.ndarray, confidence: float, replicates: int, seed: int
) -> tuple[float, float, float]:
    """Mean of per-triple ``values`` and its bootstrap interval over triples."""
    tensor = torch.from_numpy(np.asarray(values, np.float64))
    point = float(tensor.mean())
    indices = bootstrap_indices(len(tensor), replicates, seed)
    low, high = centred_interval(point, bootstrap_mean(tensor, indices), confidence)
    return point, low, high


def paired_difference(
    better: np.ndarray, worse: np.ndarray, confidence: float, replicates: int, seed: int
) -> tuple[float, float, float]:
    """Mean of ``better - worse`` over triples and its bootstrap interval (paired)."""
    diff = np.asarray(better, np.float64) - np.asarray(worse, np.float64)
    return mean_interval(diff, confidence, replicates, seed)


def paired_verdict(point: float, low: float, high: float) -> tuple[str, str]:
    """(the verdict on a paired difference that should be positive, "point [low, high]")."""
    verdict = REPRODUCED if low > 0 else CONTRADICTED if high < 0 else INCONCLUSIVE
    return verdict, f"{point:.3g} [{low:.3g}, {high:.3g}]"


def _pair_along(
    per_setting: dict, axis: int, prefer: tuple[float, float] | None = None
) -> tuple[tuple, tuple] | None:
    """The lowest and highest setting along ``axis`` (0: s_I, 1: s_T) with the other scale
    fixed at the value swept most along it (ties: the value nearest ``prefer``'s, else the
    first); None when no scale is swept."""
    groups: dict[float, list[tuple[float, float]]] = {}
    for setting in per_setting:
        groups.setdefault(setting[1 - axis], []).append(setting)
    most = max(len(g) for g in groups.values())
    candidates = [value for value, g in groups.items() if len(g) == most]
    if prefer is not None:
        candidates.sort(key=lambda value: abs(value - prefer[1 - axis]))
    fixed = groups[candidates[0]]
    if len(fixed) < 2:
        return None
    ordered = sorted(fixed, key=lambda s: s[axis])
    return ordered[0], ordered[-1]


def instruct_claims(
    per_setting: dict[tuple[float, float], dict[str, np.ndarray]],
    confidence: float,
    replicates: int,
    seed: int,
    min_samples: int,
    prefer: tuple[float, float] | None = None,
) -> list[Claim]:
    """InstructPix2Pix's two trade-off claims judged on paired per-triple differences, each
    along one scale with the other fixed (ties broken towards ``prefer``'s (s_I, s_T))."""
    claims = []
    for axis, (key, statement) in enumerate(CLAIM_STATEMENTS.items()):
        pair = _pair_along(per_setting, axis, prefer)
        count = min((len(v["success"]) for v in per_setting.values()), default=0)
        if pair is None or count < min_samples:
            why = (
                "one setting along this scale"
                if pair is None
                else f"{count} triples < {min_samples}"
            )
            claims.append(Claim(key, statement, NOT_MEASURABLE, why))
            continue
        low_s, high_s = (per_setting[s] for s in pair)
        diff = lambda a, b: paired_verdict(*paired_difference(a, b, confidence, replicates, seed))  # noqa: E731
        if axis == 0:
            kept, kept_text = diff(low_s["preservation_error"], high_s["preservation_error"])
            less, less_text = diff(low_s["success"], high_s["success"])
            verdict = both_hold([kept, less])
            evidence = f"preservation error, s_I {pair[0][0]:g} minus {pair[1][0]:g}: {kept_text}; edit success, same: {less_text}"
        else:
            verdict, more_text = diff(high_s["success"], low_s["success"])
            evidence = f"edit success, s_T {pair[1][1]:g} minus {pair[0][1]:g}: {more_text}"
        other = f"s_T {pair[0][1]:g}" if axis == 0 else f"s_I {pair[0][0]:g}"
        claims.append(Claim(key, statement, verdict, f"{evidence}, at {other} ({count} triples)"))
    return claims
