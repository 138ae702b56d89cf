"""GLIDE's findings, checked claim by claim on the evaluation's figures, and the Markdown report.

Each claim comes out "reproduced", "not reproduced" or "not measured" (a part that did not run),
with the numbers it rests on, so a reader sees why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Claim:
    key: str
    statement: str
    verdict: str  # reproduced | not reproduced | not measured
    evidence: str


def _rows(results: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return sorted(
        (r for r in results["sweeps"] if r["guidance"] == kind), key=lambda r: float(r["scale"])
    )


def _verdict(ok: bool) -> str:
    return "reproduced" if ok else "not reproduced"


def _interpolate_fid(rows: list[dict[str, Any]], clip: str, score: float) -> float | None:
    """FID of the classifier-free curve at CLIP score ``score`` (linear between neighbouring
    scales); None outside the curve's range."""
    points = sorted((float(r[clip]), float(r["fid"])) for r in rows)
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 <= score <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (score - x0) / (x1 - x0)
    return None


def clip_score_rises(results: dict[str, Any]) -> Claim:
    clip = results["clip_metric"]
    rows = _rows(results, "cfg")
    statement = f"{clip} rises with the classifier-free guidance scale"
    if len(rows) < 2:
        return Claim("clip_score_rises", statement, "not measured", "fewer than two scales")
    scores = [float(r[clip]) for r in rows]
    rises = sum(b > a for a, b in zip(scores, scores[1:], strict=False))
    ok = scores[-1] > scores[0] and rises >= (len(scores) - 1) / 2
    evidence = ", ".join(f"s={r['scale']:g}: {float(r[clip]):.2f}" for r in rows)
    return Claim("clip_score_rises", statement, _verdict(ok), evidence)


def fid_u_shaped(results: dict[str, Any]) -> Claim:
    rows = _rows(results, "cfg")
    statement = "FID against the guidance scale is U-shaped (best at an intermediate scale)"
    if len(rows) < 3:
        return Claim("fid_u_shaped", statement, "not measured", "fewer than three scales")
    fids = [float(r["fid"]) for r in rows]
    best = min(range(len(fids)), key=fids.__getitem__)
    ok = 0 < best < len(fids) - 1
    evidence = ", ".join(f"s={r['scale']:g}: {float(r['fid']):.2f}" for r in rows)
    return Claim(
        "fid_u_shaped", statement, _verdict(ok), f"{evidence}; best at s={rows[best]['scale']:g}"
    )


def cfg_beats_clip_guidance(results: dict[str, Any]) -> Claim:
    clip = results["clip_metric"]
    cfg_rows, clip_rows = _rows(results, "cfg"), _rows(results, "clip")
    statement = (
        f"classifier-free guidance reaches a better (lower) FID than CLIP guidance at equal {clip}"
    )
    if not clip_rows or len(cfg_rows) < 2:
        return Claim("cfg_beats_clip_guidance", statement, "not measured", "no CLIP-guidance sweep")
    compared = []
    for row in clip_rows:
        cfg_fid = _interpolate_fid(cfg_rows, clip, float(row[clip]))
        if cfg_fid is not None:
            compared.append((row, cfg_fid))
    if not compared:
        return Claim(
            "cfg_beats_clip_guidance",
            statement,
            "not measured",
            f"the CLIP-guided {clip} values lie outside the classifier-free curve's range",
        )
    wins = sum(cfg_fid < float(row["fid"]) for row, cfg_fid in compared)
    evidence = "; ".join(
        f"CLIP s={row['scale']:g}: {clip} {float(row[clip]):.2f}, FID {float(row['fid']):.2f} vs "
        f"classifier-free {cfg_fid:.2f}"
        for row, cfg_fid in compared
    )
    return Claim("cfg_beats_clip_guidance", statement, _verdict(wins > len(compared) / 2), evidence)


def inpainter_beats_replacement(results: dict[str, Any]) -> Claim:
    statement = (
        "the fine-tuned inpainting model beats replacement-only editing with the CFG model "
        "(boundary error and FID of the inpainted region)"
    )
    part = results.get("inpainting")
    if not part:
        return Claim(
            "inpainter_beats_replacement", statement, "not measured", "no inpainting model"
        )
    band = part["band_error_finetuned"] < part["band_error_replace"]
    fid = part["fid_region_finetuned"] < part["fid_region_replace"]
    evidence = (
        f"boundary error {part['band_error_finetuned']:.4f} vs {part['band_error_replace']:.4f}; "
        f"region FID {part['fid_region_finetuned']:.2f} vs {part['fid_region_replace']:.2f} "
        f"({part['num_fake']} edits)"
    )
    return Claim("inpainter_beats_replacement", statement, _verdict(band and fid), evidence)


def upsampler_beats_bicubic(results: dict[str, Any]) -> Claim:
    statement = (
        "the upsampler beats bicubic upsampling of the same low-resolution inputs (PSNR, FID)"
    )
    part = results.get("cascade")
    if not part:
        return Claim("upsampler_beats_bicubic", statement, "not measured", "no upsampler")
    psnr = part["psnr_upsampler"] > part["psnr_bicubic"]
    fid = part["fid_upsampler"] < part["fid_bicubic"]
    evidence = (
        f"PSNR {part['psnr_upsampler']:.2f} vs {part['psnr_bicubic']:.2f} dB; "
        f"FID {part['fid_upsampler']:.2f} vs {part['fid_bicubic']:.2f} ({part['num_fake']} images)"
    )
    return Claim("upsampler_beats_bicubic", statement, _verdict(psnr and fid), evidence)


def check_claims(results: dict[str, Any]) -> list[Claim]:
    """GLIDE's five findings that the miniature can test, in the paper's order."""
    return [
        clip_score_rises(results),
        fid_u_shaped(results),
        cfg_beats_clip_guidance(results),
        inpainter_beats_replacement(results),
        upsampler_beats_bicubic(results),
    ]


def markdown_report(results: dict[str, Any], claims: list[Claim], context: dict[str, Any]) -> str:
    """The human-readable report: claims first, then every figure with its sample counts."""
    clip = results["clip_metric"]
    lines = [
        "# GLIDE reproduction: evaluation report",
        "",
        f"Profile `{context.get('profile', '?')}`, {context.get('num_samples', '?')} evaluation "
        f"captions from `{context.get('data', '?')}`, sampler `{context.get('steps', '?')}`, "
        f"seed {context.get('seed', '?')}. MLflow run: `{context.get('mlflow_run_id', '')}`.",
    ]
    if clip != "clip_score":
        lines += [
            "",
            f"**`{clip}` is not the standard CLIP score**: it is measured with a CLIP trained by "
            "this pipeline on its own data (no OpenAI CLIP weights were given), never the CLIP "
            "that guided the samples.",
        ]
    lines += ["", "## GLIDE's claims", "", "| claim | verdict | evidence |", "|---|---|---|"]
    lines += [f"| {c.statement} | **{c.verdict}** | {c.evidence} |" for c in claims]
    lines += [
        "",
        "## Guidance sweeps",
        "",
        f"| guidance | scale | FID | KID | {clip} | generated | reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["sweeps"]:
        lines.append(
            f"| {row['guidance']} | {row['scale']:g} | {row['fid']:.2f} | "
            f"{row['kid']:.4f} ± {row['kid_std']:.4f} | {row[clip]:.2f} | {row['num_fake']} | "
            f"{row['num_real']} |"
        )
    readout = [r for r in results["sweeps"] if "colour_accuracy" in r]
    if readout:
        lines += [
            "",
            "## Caption following (embedded scenes)",
            "",
            "The object's colour and shape read from each sample (pipeline/evaluation/"
            "scene_readout.py) against the caption's.",
            "",
            "| guidance | scale | colour right | shape right | both right | captions scored |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['guidance']} | {r['scale']:g} | {r['colour_accuracy']:.0%} | "
            f"{r['shape_accuracy']:.0%} | {r['both_accuracy']:.0%} | {r['readout_scored']:.0f} |"
            for r in readout
        ]
    for part, title in (("cascade", "Cascade and upsampler"), ("inpainting", "Inpainting")):
        if results.get(part):
            lines += ["", f"## {title}", "", "| figure | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4g} |" for k, v in results[part].items()]
    lines += [
        "",
        "Small sample counts make FID biased upwards and noisy; compare runs at equal counts.",
        "",
    ]
    return "\n".join(lines)
