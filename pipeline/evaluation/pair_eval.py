"""The two-object part of the ``evaluate`` stage: held-out captions that name two objects and
their spatial relation ("a red circle to the left of a blue square"), sampled at every point of
the classifier-free guidance sweep (and by the pretrained base model), read back from the images
(:func:`pipeline.evaluation.scene_readout.read_pair`), with Wilson intervals per rate and a
paired claim: guidance raises caption following where the unguided model is imperfect.

Every condition samples the same captions with the same seed, so the claim's difference is
paired: it resamples captions, not conditions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.report import NOT_MEASURABLE, Claim, format_rate

PLOT_FILE = "pair_sweep.json"
RATES = ("colour", "shape", "relation", "all")  # both colours, both shapes, the relation, all
CLAIM_KEY = "cfg_raises_pair_following"
STATEMENT = (
    "classifier-free guidance raises caption following on held-out two-object compositions "
    "(both objects' colour and shape and their relation right)"
)


def pair_captions(
    shard_dir: str | Path, split: str, count: int, palette: dict[str, list[str]] | None
) -> tuple[list[str], str]:
    """(the first ``count`` two-object relation captions of ``split`` in shard order, "") or
    ([], why the sweep cannot run). Fewer than ``count`` such captions in a split that has some
    is an error: sample counts are fixed per profile."""
    from pipeline.data.examples import held_out_examples
    from pipeline.evaluation.scene_readout import caption_pair

    if count <= 0:
        return [], "evaluate.pair_captions is 0"
    if palette is None:
        return [], "the evaluation data are not the embedded scenes, whose objects can be read back"
    captions = [
        e["caption"]
        for e in held_out_examples(shard_dir, 10**9, split=split, images=())
        if caption_pair(e["caption"], palette["colours"], palette["shapes"])
    ]
    if not captions:
        return [], (
            f"{shard_dir}/{split} holds no two-object relation captions (scenes get them with "
            "shard.synthetic.max_objects >= 2 and relation_probability > 0)"
        )
    if len(captions) < count:
        raise ValueError(
            f"evaluate.pair_captions is {count} but {shard_dir}/{split} holds {len(captions)} "
            "two-object relation captions: lower evaluate.pair_captions or shard more data"
        )
    return captions[:count], ""


def read_pairs(
    images: np.ndarray, captions: Sequence[str], palette: dict[str, list[str]]
) -> dict[str, np.ndarray]:
    """Per caption, 0/1 for each of ``RATES``, read from uint8 ``images`` [N, H, W, 3]."""
    from pipeline.evaluation.scene_readout import caption_pair, read_pair

    colours, shapes = palette["colours"], palette["shapes"]
    seen = [
        read_pair(
            np.asarray(image),
            caption_pair(caption, colours, shapes),
            colours=colours,
            shapes=shapes,
        )  # fmt: skip
        for image, caption in zip(images, captions, strict=True)
    ]
    return {rate: np.asarray([float(s[rate]) for s in seen]) for rate in RATES}


def pair_sweep(
    samplers: dict[str, Any],
    captions: Sequence[str],
    settings: Any,
    conditions: Sequence[Any],
    palette: dict[str, list[str]],
) -> dict[str, dict[str, np.ndarray]]:
    """Per condition name: the per-caption read-out and the ``images`` (uint8 [N, H, W, 3]), one
    image per caption, every condition with the same ``settings`` (a SamplerSettings: steps,
    seed, batch size)."""
    from pipeline.sampling.text_to_image import sample_text_to_image

    out = {}
    for condition in conditions:
        sampler = samplers["base" if condition.kind == "base" else "cfg"]
        images = sample_text_to_image(sampler, captions, settings,
                                      guidance_scale=condition.scale).cpu().numpy()  # fmt: skip
        out[condition.name] = {**read_pairs(images, captions, palette), "images": images}
    return out


def sweep_rows(
    per_condition: dict[str, dict[str, np.ndarray]], confidence: float
) -> list[dict[str, Any]]:
    """One row per condition: ``guidance``, ``scale``, ``captions`` and each rate with its
    Wilson interval (``<rate>_rate``, ``_low``, ``_high``)."""
    from pipeline.evaluation.uncertainty import wilson_interval

    rows = []
    for name, values in per_condition.items():
        kind, scale = name.rsplit("_", 1)
        row: dict[str, Any] = {"guidance": kind, "scale": float(scale)}
        for rate in RATES:
            hits, n = int(values[rate].sum()), len(values[rate])
            low, high = wilson_interval(hits, n, confidence)
            row |= {f"{rate}_rate": hits / n, f"{rate}_rate_low": low, f"{rate}_rate_high": high}
        rows.append(row | {"captions": len(values["all"])})
    return rows


def sweep_on_worker(
    settings: dict[str, Any], samplers: dict[str, Any], captions: Sequence[str], device: str
) -> tuple[dict[str, Any], np.ndarray]:
    """Sample and read ``captions`` at every condition; (the ``results["pairs"]`` part, grid
    rows uint8 [rows * conditions, H, W, 3]: each shown caption's image per condition)."""
    from pipeline.diffusion import SamplerSettings
    from pipeline.evaluation.module import sweep_conditions

    conditions = sweep_conditions(settings, with_clip=False, with_base="base" in samplers)
    sampling = SamplerSettings(steps=str(settings["sample_steps"]), seed=int(settings["seed"]),
                               batch_size=int(settings["batch_size"]), device=device)  # fmt: skip
    swept = pair_sweep(samplers, captions, sampling, conditions, settings["scene_readout"])
    part = {
        "captions": list(captions),
        "steps": str(settings["sample_steps"]),
        "seed": int(settings["seed"]),
        "rows": sweep_rows(swept, float(settings["confidence"])),
        "per_caption": {
            name: {rate: values[rate].tolist() for rate in RATES} for name, values in swept.items()
        },
    }
    shown = min(len(captions), int(settings["grid_images"]))
    grid = [values["images"][n] for n in range(shown) for values in swept.values()]
    return part, np.stack(grid)


def pair_claim(results: dict[str, Any]) -> Claim:
    """The guidance claim on ``results["pairs"]``: the largest classifier-free scale minus scale
    1 in the all-right rate, a paired bootstrap interval over captions."""
    from pipeline.evaluation.edit_sweep import paired_difference, paired_verdict

    part = results.get("pairs")
    if not part:
        why = results.get("pairs_skipped", "the two-object sweep was not run")
        return Claim(CLAIM_KEY, STATEMENT, NOT_MEASURABLE, why)
    scales = sorted(r["scale"] for r in part["rows"] if r["guidance"] == "cfg")
    count = len(part["captions"])
    uncertainty = results["uncertainty"]
    minimum = int(uncertainty["min_claim_samples"])
    if len(scales) < 2 or scales[0] != 1.0 or count < minimum:
        why = (
            f"{count} captions < {minimum}"
            if count < minimum
            else "the sweep needs classifier-free scale 1 and a larger one"
        )
        return Claim(CLAIM_KEY, STATEMENT, NOT_MEASURABLE, why)
    high, low = (np.asarray(part["per_caption"][f"cfg_{s:g}"]["all"]) for s in (scales[-1], 1.0))
    verdict, text = paired_verdict(*paired_difference(
        high, low, float(uncertainty["confidence"]), int(uncertainty["bootstrap_replicates"]),
        int(part["seed"]),
    ))  # fmt: skip
    rates = {r["scale"]: r["all_rate"] for r in part["rows"] if r["guidance"] == "cfg"}
    evidence = (
        f"all right at s=1: {rates[1.0]:.0%}, s={scales[-1]:g}: {rates[scales[-1]]:.0%}; "
        f"s={scales[-1]:g} minus s=1: difference {text} ({count} captions)"
    )
    return Claim(CLAIM_KEY, STATEMENT, verdict, evidence)


def metrics_record(part: dict[str, Any]) -> dict[str, Any]:
    """The part as ``metrics/eval.json`` keeps it: rows with both interval ends and the caption
    count, not the per-caption values."""
    return {k: v for k, v in part.items() if k not in ("per_caption", "captions")} | {
        "captions": len(part["captions"])
    }


def plot_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """DVC plot rows: the rates against the guidance scale, one per condition."""
    return list(results.get("pairs", {}).get("rows", []))


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``pairs_cfg_4/all_rate``-style scalars for MLflow."""
    out = {}
    for row in plot_rows(results):
        name = f"pairs_{row['guidance']}_{row['scale']:g}"
        for rate in RATES:
            for suffix in ("", "_low", "_high"):
                out[f"{name}/{rate}_rate{suffix}"] = float(row[f"{rate}_rate{suffix}"])
    return out


def report_lines(results: dict[str, Any]) -> list[str]:
    """The report's two-object section: the rates per condition, or why there are none."""
    lines = ["", "## Two-object compositions (embedded scenes)", ""]
    part = results.get("pairs")
    if not part:
        why = results.get("pairs_skipped", "the two-object sweep was not run")
        return lines + [f"Not evaluated: {why}."]
    lines += [
        f"{len(part['captions'])} held-out captions naming two objects and their relation, "
        f"sampler `{part['steps']}`, the same seed in every condition. Read back from each image "
        "(pipeline/evaluation/scene_readout.py `read_pair`): both colours, both shapes, the "
        "relation, all three; Wilson intervals.",
        "",
        "| guidance | scale | colours right | shapes right | relation right | all right |",
        "|---|---|---|---|---|---|",
    ]
    for row in part["rows"]:
        cells = [format_rate(row, f"{r}_rate") for r in RATES]
        lines.append(f"| {row['guidance']} | {row['scale']:g} | {' | '.join(cells)} |")
    return lines
