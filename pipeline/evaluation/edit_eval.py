"""The instruction-editing part of the ``evaluate`` stage: held-out edit triples edited at every
(s_I, s_T) of the sweep (on the evaluation worker, beside the guidance sweeps), the trade-off
rows with their intervals, InstructPix2Pix's two claims, the report section, the DVC plot rows,
the MLflow scalars and a grid (input | one edit per setting)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.report import NOT_MEASURABLE, Claim, format_rate

PLOT_FILE = "instruct_tradeoff.json"
PAPER_SCALES = (1.5, 7.5)  # InstructPix2Pix's default s_I, s_T: claims are judged nearest them


def edit_scales(settings: dict[str, Any]) -> list[tuple[float, float]]:
    """Every (s_I, s_T) of ``edit_image_guidance`` x ``edit_guidance``."""
    image, text = settings["edit_image_guidance"], settings["edit_guidance"]
    return [(float(i), float(t)) for i, t in itertools.product(image, text)]


def edit_triples(shard_dir: str | Path, count: int) -> tuple[list[dict[str, Any]], str]:
    """(the first ``count`` held-out triples of ``shard_dir``, "") or ([], why the sweep cannot
    run). A triple: ``{"source", "target", "caption", "meta"}``. The read-out needs the embedded
    scene each triple was drawn from; fewer triples than ``count`` is an error (sample counts are
    fixed per profile)."""
    from pipeline.data.edit_shards import EDIT_MANIFEST_FORMAT
    from pipeline.data.examples import held_out_examples
    from pipeline.data.manifest import read_manifest

    if count <= 0:
        return [], "evaluate.edit_triples is 0"
    if not (Path(shard_dir) / "manifest.json").is_file():
        return [], f"no edit triples at {shard_dir} (run the shard_edits stage)"
    manifest = read_manifest(shard_dir, expected_format=EDIT_MANIFEST_FORMAT)
    if manifest.get("source") != "synthetic":
        return [], (
            f"the triples of {shard_dir} come from `{manifest.get('source')}`, not the embedded "
            "scenes whose edits can be read back from an image"
        )
    found = held_out_examples(shard_dir, count, images=("source", "edited"), manifest=manifest,
                              with_meta=True)  # fmt: skip
    if len(found) < count:
        raise ValueError(
            f"evaluate.edit_triples is {count} but {shard_dir} holds {len(found)} held-out "
            "triples: lower evaluate.edit_triples or shard more (shard_edits.num_samples)"
        )
    return [
        {"source": t["source"], "target": t["edited"], "caption": t["caption"], "meta": t["meta"]}
        for t in found
    ], ""


def sweep_on_worker(
    settings: dict[str, Any], model_path: str, triples: Sequence[dict[str, Any]], device: str
) -> tuple[dict[str, Any], np.ndarray]:
    """Edit ``triples`` at every setting; (the ``results["instruct"]`` part, grid rows uint8
    [rows * (2 + settings), H, W, 3]: each triple's input, the wanted edit (its target), then
    its edit per setting; the part's ``shown`` holds the rows' instructions)."""
    from pipeline.diffusion import SamplerSettings
    from pipeline.evaluation.edit_sweep import edit_sweep, kind_rows, sweep_rows
    from pipeline.sampling.loading import load_sampling_model

    sampler = load_sampling_model(
        model_path,
        device=device,
        expect="instruct",
        compile=bool(settings["compile"]),
        compile_backend=str(settings["compile_backend"]),
        precision=str(settings["precision"]),
    )
    sampling = SamplerSettings(steps=str(settings["edit_steps"]), seed=int(settings["seed"]),
                               batch_size=int(settings["batch_size"]))  # fmt: skip
    swept = edit_sweep(sampler, triples, sampling, edit_scales(settings))
    interval = (float(settings["confidence"]), int(settings["bootstrap_replicates"]),
                int(settings["seed"]))  # fmt: skip
    shown_setting = nearest_paper_setting(list(swept))
    shown = triples[: int(settings["grid_images"])]
    part = {
        "triples": len(triples),
        "steps": str(settings["edit_steps"]),
        "seed": int(settings["seed"]),
        "rows": sweep_rows(swept, *interval),
        "by_kind": {
            "image_guidance": shown_setting[0],
            "text_guidance": shown_setting[1],
            "rows": kind_rows(swept[shown_setting], triples, *interval),
        },
        "per_triple": {
            f"{i:g},{t:g}": {k: v.tolist() for k, v in values.items() if k != "edits"}
            for (i, t), values in swept.items()
        },
        "shown": [t["caption"] for t in shown],
    }
    grid = [
        image
        for n, t in enumerate(shown)
        for image in (t["source"], t["target"], *(v["edits"][n] for v in swept.values()))
    ]
    return part, np.stack(grid)


def nearest_paper_setting(settings: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The (s_I, s_T) of ``settings`` nearest InstructPix2Pix's defaults (ties: the first)."""
    return min(settings, key=lambda s: abs(s[0] - PAPER_SCALES[0]) + abs(s[1] - PAPER_SCALES[1]))


def _per_setting(part: dict[str, Any]) -> dict[tuple[float, float], dict[str, np.ndarray]]:
    out = {}
    for name, values in part["per_triple"].items():
        image_scale, text_scale = (float(x) for x in name.split(","))
        out[(image_scale, text_scale)] = {k: np.asarray(v) for k, v in values.items()}
    return out


def edit_claims(results: dict[str, Any]) -> list[Claim]:
    """The two trade-off claims on ``results["instruct"]``; not measurable without it."""
    from pipeline.evaluation.edit_sweep import CLAIM_STATEMENTS, instruct_claims

    part = results.get("instruct")
    if not part:
        why = results.get("instruct_skipped", "the instruction-editing model was not evaluated")
        return [Claim(k, s, NOT_MEASURABLE, why) for k, s in CLAIM_STATEMENTS.items()]
    uncertainty = results["uncertainty"]
    return instruct_claims(
        _per_setting(part),
        float(uncertainty["confidence"]),
        int(uncertainty["bootstrap_replicates"]),
        int(part["seed"]),
        int(uncertainty["min_claim_samples"]),
        prefer=PAPER_SCALES,
    )


def metrics_record(part: dict[str, Any]) -> dict[str, Any]:
    """The part as ``metrics/eval.json`` keeps it: the rows with both interval ends, not the
    per-triple values (the report's claims are judged on those) nor the grid's instructions."""
    return {k: v for k, v in part.items() if k not in ("per_triple", "shown")}


def plot_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """DVC plot rows: preservation error against edit success, one per setting."""
    return list(results.get("instruct", {}).get("rows", []))


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``instruct_1.5_7.5/edit_success``-style scalars for MLflow, and per edit kind at the
    setting nearest the paper's: ``instruct_1.5_7.5/recolour/edit_success``."""
    part = results.get("instruct", {})
    named = [
        (f"instruct_{r['image_guidance']:g}_{r['text_guidance']:g}", r) for r in plot_rows(results)
    ]
    if by_kind := part.get("by_kind"):
        setting = f"instruct_{by_kind['image_guidance']:g}_{by_kind['text_guidance']:g}"
        named += [(f"{setting}/{row['kind']}", row) for row in by_kind["rows"]]
    out = {}
    for name, row in named:
        for key in ("edit_success", "clean_edit", "others_kept", "preservation_error"):
            for suffix in ("", "_low", "_high"):
                if row.get(key + suffix) is not None:  # others_kept: None without other objects
                    out[f"{name}/{key}{suffix}"] = float(row[key + suffix])
    return out


def _figures(row: dict[str, Any]) -> str:
    """A row's success, clean edits, others kept (of how many) and preservation error."""
    return (
        f"{format_rate(row, 'edit_success')} | {format_rate(row, 'clean_edit')} | "
        f"{format_rate(row, 'others_kept')} ({row['others_scored']}) | {row['preservation_error']:.3f} "
        f"[{row['preservation_error_low']:.3f}, {row['preservation_error_high']:.3f}]"
    )


def report_lines(results: dict[str, Any]) -> list[str]:
    """The report's instruction-editing section: the trade-off table, or why there is none."""
    lines = ["", "## Instruction editing (InstructPix2Pix)", ""]
    part = results.get("instruct")
    if not part:
        why = results.get("instruct_skipped", "the instruction-editing model was not evaluated")
        return lines + [f"Not evaluated: {why}."]
    lines += [
        f"{part['triples']} held-out edit triples of the embedded scenes, sampler "
        f"`{part['steps']}`, the same seed at every setting. Edit success: the attribute the "
        "instruction names reads back as asked; others kept: every object the edit leaves alone "
        "reads back with its colour and shape in its place (of the triples that have such "
        "objects, counted in brackets); clean edit: both (Wilson intervals); preservation "
        "error: mean absolute pixel error outside the edited object's region, in [0, 1] "
        "(bootstrap).",
        "",
        "| s_I | s_T | edit success | clean edit | others kept (triples) | preservation error |",
        "|---|---|---|---|---|---|",
    ]
    for row in part["rows"]:
        lines.append(f"| {row['image_guidance']:g} | {row['text_guidance']:g} | {_figures(row)} |")
    if by_kind := part.get("by_kind"):
        lines += [
            "",
            f"By edit kind, at s_I {by_kind['image_guidance']:g}, s_T {by_kind['text_guidance']:g}:",
            "",
            "| edit | triples | edit success | clean edit | others kept (triples) | "
            "preservation error |",
            "|---|---|---|---|---|---|",
        ]
        lines += [f"| {r['kind']} | {r['triples']} | {_figures(r)} |" for r in by_kind["rows"]]
    return lines
