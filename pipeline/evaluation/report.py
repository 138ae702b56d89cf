"""GLIDE's findings, checked claim by claim on the evaluation's figures, and the Markdown report.

Each claim is reduced to a difference that is positive when the claim holds, judged with its
bootstrap interval (the same resampled captions for every condition, so the difference is
paired): "reproduced" when the whole interval is above zero, "contradicted" when it is below,
"inconclusive" when it contains zero, "not measurable" (with the reason) when the figures cannot
decide it: a part not run, too few samples, unequal sample counts, or an evaluation CLIP that
retrieves its own captions no better than chance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.evaluation.uncertainty import centred_interval

REPRODUCED, CONTRADICTED = "reproduced", "contradicted"
INCONCLUSIVE, NOT_MEASURABLE = "inconclusive", "not measurable"
VERDICTS = (REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURABLE)


@dataclass(frozen=True)
class Claim:
    key: str
    statement: str
    verdict: str  # one of VERDICTS
    evidence: str


class NotMeasurable(Exception):
    """Why a claim cannot be decided on these figures (the message is the reason)."""


# ---------------------------------------------------------------- figures and their replicates
def _rows(results: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return sorted(
        (r for r in results["sweeps"] if r["guidance"] == kind), key=lambda r: float(r["scale"])
    )


def _name(row: dict[str, Any]) -> str:
    return f"{row['guidance']}_{row['scale']:g}"


def _replicates(results: dict[str, Any], figure: str) -> np.ndarray:
    series = results.get("replicates", {}).get(figure)
    if series is None:
        raise NotMeasurable(f"no per-sample values for {figure} (no bootstrap)")
    return np.asarray(series, dtype=np.float64)


def _confidence(results: dict[str, Any]) -> float:
    return float(results["uncertainty"]["confidence"])


def _require_samples(results: dict[str, Any], counts: list[int], what: str) -> None:
    minimum = int(results["uncertainty"]["min_claim_samples"])
    if len(set(counts)) > 1:
        raise NotMeasurable(f"unequal sample counts {sorted(set(counts))} among the {what}")
    if counts and counts[0] < minimum:
        raise NotMeasurable(
            f"{counts[0]} samples for the {what}, below evaluate.min_claim_samples={minimum}"
        )


def _require_clip_above_chance(results: dict[str, Any]) -> None:
    retrieval = results.get("eval_clip_retrieval")
    if retrieval is None:
        raise NotMeasurable("the evaluation CLIP's retrieval was not measured")
    if not retrieval["accuracy_low"] > retrieval["chance"]:
        raise NotMeasurable(
            f"the evaluation CLIP retrieves real captions at {retrieval['accuracy']:.0%} "
            f"[{retrieval['accuracy_low']:.0%}, {retrieval['accuracy_high']:.0%}] against chance "
            f"{retrieval['chance']:.0%}: its scores carry no signal"
        )


def _judge(results: dict[str, Any], point: float, replicates: np.ndarray) -> tuple[str, str]:
    """Verdict and "difference d [low, high]" of a difference that is positive when a claim
    holds."""
    low, high = centred_interval(point, replicates, _confidence(results))
    if not np.isfinite(point) or not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE, f"difference {point:.3g} (no interval)"
    verdict = REPRODUCED if low > 0 else CONTRADICTED if high < 0 else INCONCLUSIVE
    return verdict, f"difference {point:.3g} [{low:.3g}, {high:.3g}]"


def both_hold(verdicts: list[str]) -> str:
    """Two figures must both hold: any contradiction contradicts, else any doubt is doubt."""
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    return CONTRADICTED if CONTRADICTED in verdicts else INCONCLUSIVE


def _fmt(figures: dict[str, Any], key: str, digits: int = 2) -> str:
    """``value [low, high]`` where the interval is known."""
    value = float(figures[key])
    if f"{key}_low" in figures:
        return (
            f"{value:.{digits}f} [{figures[f'{key}_low']:.{digits}f}, "
            f"{figures[f'{key}_high']:.{digits}f}]"
        )
    return f"{value:.{digits}f}"


# ---------------------------------------------------------------- the claims
def clip_score_rises(results: dict[str, Any]) -> tuple[str, str]:
    clip = results["clip_metric"]
    rows = _rows(results, "cfg")
    if len(rows) < 2:
        raise NotMeasurable("fewer than two classifier-free scales")
    _require_samples(results, [int(r["num_fake"]) for r in rows], "classifier-free scales")
    _require_clip_above_chance(results)
    first, last = rows[0], rows[-1]
    point = float(last[clip]) - float(first[clip])
    reps = _replicates(results, f"{_name(last)}/{clip}") - _replicates(
        results, f"{_name(first)}/{clip}"
    )
    verdict, difference = _judge(results, point, reps)
    evidence = ", ".join(f"s={r['scale']:g}: {_fmt(r, clip)}" for r in rows)
    return verdict, f"{evidence}; s={last['scale']:g} minus s={first['scale']:g}: {difference}"


def fid_u_shaped(results: dict[str, Any]) -> tuple[str, str]:
    rows = _rows(results, "cfg")
    if len(rows) < 3:
        raise NotMeasurable("fewer than three classifier-free scales")
    _require_samples(results, [int(r["num_fake"]) for r in rows], "classifier-free scales")
    fids = np.array([float(r["fid"]) for r in rows])
    reps = np.stack([_replicates(results, f"{_name(r)}/fid") for r in rows])  # [scales, B]

    def margin(values: np.ndarray) -> np.ndarray:
        """How far the best interior scale lies below the better end (> 0: U-shaped)."""
        return np.minimum(values[0], values[-1]) - values[1:-1].min(axis=0)

    verdict, difference = _judge(results, float(margin(fids)), margin(reps))
    evidence = ", ".join(f"s={r['scale']:g}: {_fmt(r, 'fid')}" for r in rows)
    return verdict, f"{evidence}; better end minus best interior FID: {difference}"


def _interpolate(xs: np.ndarray, ys: np.ndarray, x: float) -> float:
    """y of the polyline through (xs, ys), in the order of xs, at x; NaN outside its range."""
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    if not xs[0] <= x <= xs[-1]:
        return float("nan")
    return float(np.interp(x, xs, ys))


def cfg_beats_clip_guidance(results: dict[str, Any]) -> tuple[str, str]:
    clip = results["clip_metric"]
    cfg_rows, clip_rows = _rows(results, "cfg"), _rows(results, "clip")
    if not clip_rows or len(cfg_rows) < 2:
        raise NotMeasurable("no CLIP-guidance sweep")
    _require_samples(results, [int(r["num_fake"]) for r in cfg_rows + clip_rows], "sweep rows")
    _require_clip_above_chance(results)

    def gap(cfg_x, cfg_y, clip_x, clip_y) -> float:
        """Mean FID of CLIP guidance minus classifier-free FID at the same CLIP score."""
        gaps = [cy - _interpolate(cfg_x, cfg_y, cx) for cx, cy in zip(clip_x, clip_y, strict=True)]
        return float(np.mean(gaps))

    def figures(rows: list[dict[str, Any]], key: str) -> np.ndarray:
        return np.stack([_replicates(results, f"{_name(r)}/{key}") for r in rows])

    point = gap(
        *(
            np.array([float(r[k]) for r in rs])
            for rs in (cfg_rows, clip_rows)
            for k in (clip, "fid")
        )
    )
    if not np.isfinite(point):
        raise NotMeasurable(f"the CLIP-guided {clip} values lie outside the classifier-free range")
    reps = [
        figures(cfg_rows, clip),
        figures(cfg_rows, "fid"),
        figures(clip_rows, clip),
        figures(clip_rows, "fid"),
    ]
    gaps = np.array([gap(*(r[:, b] for r in reps)) for b in range(reps[0].shape[1])])
    verdict, difference = _judge(results, point, gaps)
    outside = int(np.isnan(gaps).sum())
    evidence = "; ".join(
        f"CLIP s={r['scale']:g}: {clip} {_fmt(r, clip)}, FID {_fmt(r, 'fid')}" for r in clip_rows
    )
    note = f" ({outside} of {len(gaps)} resamples outside the curve's range)" if outside else ""
    return verdict, f"{evidence}; CLIP-guided minus classifier-free FID: {difference}{note}"


def inpainter_beats_replacement(results: dict[str, Any]) -> tuple[str, str]:
    part = results.get("inpainting")
    if not part:
        raise NotMeasurable("no inpainting model")
    _require_samples(results, [int(part["num_fake"])], "inpainting edits")
    verdicts, parts = [], []
    for key, label, digits in (
        ("band_error", "boundary error", 4),
        ("fid_region", "region FID", 2),
    ):
        ours, theirs = f"inpainting/{key}_finetuned", f"inpainting/{key}_replace"
        point = float(part[f"{key}_replace"]) - float(part[f"{key}_finetuned"])
        reps = _replicates(results, theirs) - _replicates(results, ours)
        verdict, difference = _judge(results, point, reps)
        verdicts.append(verdict)
        parts.append(
            f"{label} {_fmt(part, f'{key}_finetuned', digits)} vs "
            f"{_fmt(part, f'{key}_replace', digits)} "
            f"(replacement minus fine-tuned: {difference})"
        )
    return both_hold(verdicts), f"{'; '.join(parts)} ({part['num_fake']} edits)"


def upsampler_beats_bicubic(results: dict[str, Any]) -> tuple[str, str]:
    part = results.get("cascade")
    if not part:
        raise NotMeasurable("no upsampler")
    _require_samples(results, [int(part["num_fake"])], "upsampled images")
    psnr_point = float(part["psnr_upsampler"]) - float(part["psnr_bicubic"])
    psnr_reps = _replicates(results, "cascade/psnr_upsampler") - _replicates(
        results, "cascade/psnr_bicubic"
    )
    fid_point = float(part["fid_bicubic"]) - float(part["fid_upsampler"])
    fid_reps = _replicates(results, "cascade/fid_bicubic") - _replicates(
        results, "cascade/fid_upsampler"
    )
    psnr_verdict, psnr_diff = _judge(results, psnr_point, psnr_reps)
    fid_verdict, fid_diff = _judge(results, fid_point, fid_reps)
    evidence = (
        f"PSNR {_fmt(part, 'psnr_upsampler')} vs {_fmt(part, 'psnr_bicubic')} dB "
        f"(upsampler minus bicubic: {psnr_diff}); FID {_fmt(part, 'fid_upsampler')} vs "
        f"{_fmt(part, 'fid_bicubic')} (bicubic minus upsampler: {fid_diff}) "
        f"({part['num_fake']} images)"
    )
    return both_hold([psnr_verdict, fid_verdict]), evidence


CLAIMS: tuple[tuple[str, Callable[[dict[str, Any]], tuple[str, str]], str], ...] = (
    ("clip_score_rises", clip_score_rises, "{clip} rises with the classifier-free guidance scale"),
    (
        "fid_u_shaped",
        fid_u_shaped,
        "FID against the guidance scale is U-shaped (best at an intermediate scale)",
    ),
    (
        "cfg_beats_clip_guidance",
        cfg_beats_clip_guidance,
        "classifier-free guidance reaches a better (lower) FID than CLIP guidance at equal {clip}",
    ),
    (
        "inpainter_beats_replacement",
        inpainter_beats_replacement,
        "the fine-tuned inpainting model beats replacement-only editing with the CFG model "
        "(boundary error and FID of the inpainted region)",
    ),
    (
        "upsampler_beats_bicubic",
        upsampler_beats_bicubic,
        "the upsampler beats bicubic upsampling of the same low-resolution inputs (PSNR, FID)",
    ),
)


def check_claims(results: dict[str, Any]) -> list[Claim]:
    """GLIDE's five findings that the miniature can test, in the paper's order."""
    claims = []
    for key, judge, statement in CLAIMS:
        text = statement.format(clip=results["clip_metric"])
        try:
            verdict, evidence = judge(results)
        except NotMeasurable as reason:
            verdict, evidence = NOT_MEASURABLE, str(reason)
        claims.append(Claim(key, text, verdict, evidence))
    return claims


# ---------------------------------------------------------------- the report
def _header(results: dict[str, Any], context: dict[str, Any]) -> list[str]:
    clip = results["clip_metric"]
    uncertainty = results["uncertainty"]
    lines = [
        "# GLIDE reproduction: evaluation report",
        "",
        f"Profile `{context.get('profile', '?')}`, {context.get('num_samples', '?')} evaluation "
        f"captions from `{context.get('data', '?')}`, sampler `{context.get('steps', '?')}`, "
        f"seed {context.get('seed', '?')}. MLflow run: `{context.get('mlflow_run_id', '')}`.",
    ]
    lines += [
        "",
        f"Intervals in brackets are {uncertainty['confidence']:.0%} intervals: the spread of "
        f"{uncertainty['bootstrap_replicates']} bootstrap resamples of the evaluation samples "
        "around each figure (FID, CLIP score, PSNR, boundary error; the same resamples for "
        "every condition, so differences are paired), KID's standard deviation over its "
        "subsets, Wilson intervals for rates. A claim is decided only when the interval of "
        f"its difference excludes zero; below {uncertainty['min_claim_samples']} "
        "samples it is not measurable.",
    ]
    if clip != "clip_score":
        lines += [
            "",
            f"**`{clip}` is not the standard CLIP score**: it is measured with a CLIP trained by "
            "this pipeline on its own data (no OpenAI CLIP weights were given), never the CLIP "
            "that guided the samples.",
        ]
    retrieval = results.get("eval_clip_retrieval")
    if retrieval:
        lines += [
            "",
            f"Evaluation CLIP on the {retrieval['pairs']} real pairs: picks each image's own "
            f"caption {format_rate(retrieval, 'accuracy')} of the time against chance "
            f"{retrieval['chance']:.2f}.",
        ]
    return lines


def _sweep_table(results: dict[str, Any]) -> list[str]:
    clip = results["clip_metric"]
    lines = [
        "",
        "## Guidance sweeps",
        "",
        f"| guidance | scale | FID | KID | {clip} | generated | reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["sweeps"]:
        lines.append(
            f"| {row['guidance']} | {row['scale']:g} | {_fmt(row, 'fid')} | "
            f"{row['kid']:.4f} ± {row['kid_std']:.4f} | {_fmt(row, clip)} | {row['num_fake']} | "
            f"{row['num_real']} |"
        )
    return lines


def format_rate(row: dict[str, Any], key: str) -> str:
    """``row[key]`` as a percentage with its interval where the row has one; "n/a" for None."""
    if row.get(key) is None:
        return "n/a"
    if f"{key}_low" in row:
        return f"{row[key]:.0%} [{row[f'{key}_low']:.0%}, {row[f'{key}_high']:.0%}]"
    return f"{row[key]:.0%}"


def _caption_following(results: dict[str, Any], context: dict[str, Any]) -> list[str]:
    lines = ["", "## Caption following (embedded scenes)", ""]
    readout = [r for r in results["sweeps"] if "colour_accuracy" in r]
    if not readout:
        source = context.get("source") or "not the embedded scenes"
        return lines + [
            f"Does not apply: the evaluation captions come from `{source}`, not from the "
            "embedded synthetic scenes whose colour and shape can be read back from a sample.",
        ]
    lines += [
        "The object's colour and shape read from each sample (pipeline/evaluation/"
        "scene_readout.py) against the caption's.",
        "",
        "| guidance | scale | colour right | shape right | both right | captions scored |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['guidance']} | {r['scale']:g} | {format_rate(r, 'colour_accuracy')} | "
        f"{format_rate(r, 'shape_accuracy')} | {format_rate(r, 'both_accuracy')} | "
        f"{r['readout_scored']:.0f} |"
        for r in readout
    ]
    return lines


def _part_tables(results: dict[str, Any]) -> list[str]:
    lines = []
    for part, title in (("cascade", "Cascade and upsampler"), ("inpainting", "Inpainting")):
        figures = results.get(part)
        if not figures:
            continue
        lines += ["", f"## {title}", "", "| figure | value | interval |", "|---|---|---|"]
        for key, value in figures.items():
            if key.endswith(("_low", "_high")):
                continue
            interval = (
                f"[{figures[f'{key}_low']:.4g}, {figures[f'{key}_high']:.4g}]"
                if f"{key}_low" in figures
                else ""
            )
            lines.append(f"| {key} | {value:.4g} | {interval} |")
    return lines


def markdown_report(
    results: dict[str, Any],
    claims: list[Claim],
    context: dict[str, Any],
    sections: list[str] | None = None,
) -> str:
    """The human-readable report: claims first, then every figure with its interval and counts
    (``sections``: more lines, e.g. the instruction-editing part, before the closing note)."""
    lines = _header(results, context)
    lines += ["", "## GLIDE's claims", "", "| claim | verdict | evidence |", "|---|---|---|"]
    lines += [f"| {c.statement} | **{c.verdict}** | {c.evidence} |" for c in claims]
    lines += _sweep_table(results)
    lines += _caption_following(results, context)
    lines += _part_tables(results)
    lines += sections or []
    lines += [
        "",
        "Small sample counts make FID biased upwards; compare runs at equal counts.",
        "",
    ]
    return "\n".join(lines)
