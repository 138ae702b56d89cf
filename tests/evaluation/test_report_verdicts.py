"""The report's claims on synthetic figures: each of the four verdicts, each gate, the intervals
printed next to the figures. Replicates are drawn around each figure with a chosen spread."""

import numpy as np
import pytest

from pipeline.evaluation.report import check_claims, markdown_report

REPLICATES = 200


def _spread(rng, point, spread):
    return (point + spread * rng.standard_normal(REPLICATES)).tolist()


def results_with(cfg_points, clip_points=(), spread=0.5, samples=64, retrieval=0.9, **parts):
    """Sweep rows (scale, FID, CLIP score) with replicates of the given spread around each
    figure, an evaluation CLIP retrieving at ``retrieval`` (chance 0.1), optional parts."""
    rng = np.random.default_rng(0)
    rows, replicates = [], {}
    for kind, points in (("cfg", cfg_points), ("clip", clip_points)):
        for scale, fid, score in points:
            name = f"{kind}_{scale:g}"
            rows.append(
                {"guidance": kind, "scale": scale, "fid": fid, "kid": 0.01, "kid_std": 0.001,
                 "clip_score": score, "num_fake": samples, "num_real": samples}
            )  # fmt: skip
            replicates[f"{name}/fid"] = _spread(rng, fid, spread)
            replicates[f"{name}/clip_score"] = _spread(rng, score, spread)
    for part, figures in parts.items():
        for key, value in figures.items():
            if key != "num_fake":
                replicates[f"{part}/{key}"] = _spread(rng, value, spread)
    hits = round(retrieval * samples)
    return {
        "clip_metric": "clip_score",
        "sweeps": rows,
        "replicates": replicates,
        "uncertainty": {"confidence": 0.95, "bootstrap_replicates": REPLICATES,
                        "min_claim_samples": 16},
        "eval_clip_retrieval": {
            "pairs": samples, "hits": hits, "accuracy": hits / samples, "chance": 0.1,
            "accuracy_low": hits / samples - 0.1, "accuracy_high": min(1.0, hits / samples + 0.1),
        },
        **parts,
    }  # fmt: skip


GLIDE_LIKE = dict(
    cfg_points=[(1.0, 30.0, 20.0), (2.0, 20.0, 24.0), (3.0, 25.0, 27.0), (5.0, 40.0, 29.0)],
    clip_points=[(1.0, 45.0, 22.0), (4.0, 50.0, 26.0)],
    cascade={"psnr_upsampler": 25.0, "psnr_bicubic": 22.0, "fid_upsampler": 10.0,
             "fid_bicubic": 30.0, "num_fake": 64},
    inpainting={"band_error_finetuned": 0.05, "band_error_replace": 0.09,
                "fid_region_finetuned": 12.0, "fid_region_replace": 20.0, "num_fake": 64},
)  # fmt: skip


def verdicts(results):
    return {c.key: c.verdict for c in check_claims(results)}


def test_clear_differences_are_reproduced():
    assert set(verdicts(results_with(**GLIDE_LIKE, spread=0.01)).values()) == {"reproduced"}


def test_clear_differences_the_wrong_way_are_contradicted():
    found = verdicts(
        results_with(
            [(1.0, 20.0, 24.0), (2.0, 25.0, 22.0), (3.0, 30.0, 20.0)],
            [(2.0, 10.0, 22.0)],
            spread=0.01,
            cascade={
                "psnr_upsampler": 20.5,
                "psnr_bicubic": 32.5,
                "fid_upsampler": 40.0,
                "fid_bicubic": 30.0,
                "num_fake": 64,
            },
        )  # fmt: skip
    )
    assert found["fid_u_shaped"] == "contradicted"  # FID grows with the scale
    assert found["clip_score_rises"] == "contradicted"
    assert found["cfg_beats_clip_guidance"] == "contradicted"  # CLIP guidance's FID is lower
    assert found["upsampler_beats_bicubic"] == "contradicted"


def test_differences_within_the_noise_are_inconclusive():
    """The ci report's case: FID 444.18 vs 444.21 decided nothing."""
    noisy = results_with(**GLIDE_LIKE, spread=30.0)
    assert set(verdicts(noisy).values()) == {"inconclusive"}


def test_one_figure_in_doubt_makes_a_two_figure_claim_inconclusive():
    cascade = {"psnr_upsampler": 25.0, "psnr_bicubic": 25.01, "fid_upsampler": 10.0,
               "fid_bicubic": 30.0, "num_fake": 64}  # fmt: skip
    found = verdicts(results_with([(1.0, 30.0, 20.0)], spread=0.5, cascade=cascade))
    assert found["upsampler_beats_bicubic"] == "inconclusive"


@pytest.mark.parametrize(
    ("change", "claim", "reason"),
    [
        (dict(samples=8), "fid_u_shaped", "below evaluate.min_claim_samples=16"),
        (dict(retrieval=0.1), "clip_score_rises", "no signal"),
        (dict(retrieval=0.1), "cfg_beats_clip_guidance", "no signal"),
        (dict(clip_points=()), "cfg_beats_clip_guidance", "no CLIP-guidance sweep"),
        (dict(cascade=None), "upsampler_beats_bicubic", "no upsampler"),
        (dict(inpainting=None), "inpainter_beats_replacement", "no inpainting model"),
    ],
)
def test_claims_the_figures_cannot_decide_are_not_measurable_with_the_reason(change, claim, reason):
    settings = {**GLIDE_LIKE, "spread": 0.01, **change}
    settings = {k: v for k, v in settings.items() if v is not None}
    found = {c.key: c for c in check_claims(results_with(**settings))}
    assert found[claim].verdict == "not measurable"
    assert reason in found[claim].evidence
    if "retrieval" in change:  # a CLIP at chance does not stop claims that use no CLIP score
        assert found["fid_u_shaped"].verdict == "reproduced"


def test_rows_with_unequal_sample_counts_are_not_compared():
    results = results_with(**GLIDE_LIKE, spread=0.01)
    results["sweeps"][1]["num_fake"] = 32
    found = {c.key: c for c in check_claims(results)}
    assert found["fid_u_shaped"].verdict == "not measurable"
    assert "unequal sample counts [32, 64]" in found["fid_u_shaped"].evidence


def test_report_prints_intervals_confidence_retrieval_and_caption_following_status():
    results = results_with(**GLIDE_LIKE, spread=0.01)
    for row in results["sweeps"]:
        row.update(fid_low=row["fid"] - 1, fid_high=row["fid"] + 2)
    claims = check_claims(results)
    text = markdown_report(results, claims, {"profile": "ci", "source": "folder"})
    for claim in claims:
        assert claim.statement in text and f"**{claim.verdict}**" in text
    assert "95% intervals" in text and "200 bootstrap resamples" in text
    assert "| cfg | 3 | 25.00 [24.00, 27.00] |" in text
    assert "caption 91% [81%, 100%] of the time against chance 0.10" in text
    assert "Does not apply: the evaluation captions come from `folder`" in text
    for row in results["sweeps"]:
        row.update(colour_accuracy=0.75, shape_accuracy=0.5, both_accuracy=0.5, readout_scored=8)
        row.update(colour_accuracy_low=0.41, colour_accuracy_high=0.93)
    text = markdown_report(results, claims, {"profile": "ci"})
    assert "| cfg | 3 | 75% [41%, 93%] | 50% | 50% | 8 |" in text
