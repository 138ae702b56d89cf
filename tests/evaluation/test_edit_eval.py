"""The evaluate stage's instruction-editing part: the sweep on a saved model, what the report,
metrics, plot and MLflow get from it, and its claims (judged nearest the paper's scales, or
not measurable with the reason)."""

import numpy as np
import pytest

from pipeline.evaluation.edit_eval import (
    edit_claims,
    edit_scales,
    edit_triples,
    flat_metrics,
    metrics_record,
    nearest_paper_setting,
    plot_rows,
    report_lines,
    sweep_on_worker,
)
from pipeline.evaluation.report import VERDICTS
from pipeline.evaluation.stage import grid_images
from pipeline.text import get_tokenizer
from tests.evaluation.test_edit_sweep import _readout, triples
from tests.sampling.conftest import write_model_file

SETTINGS = {
    "edit_image_guidance": [1.0, 2.0],
    "edit_guidance": [3.0],
    "edit_steps": "ddim2",
    "seed": 5,
    "batch_size": 0,
    "compile": False,
    "compile_backend": "inductor",
    "precision": "32-true",
    "confidence": 0.95,
    "bootstrap_replicates": 50,
    "grid_images": 2,
}


def uncertainty(min_samples):
    return {"confidence": 0.95, "bootstrap_replicates": 200, "min_claim_samples": min_samples}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    path = tmp_path_factory.mktemp("instruct") / "instruct.pt"
    write_model_file(path, get_tokenizer("clip"), instruct=True)
    held = triples(16, count=4)
    return held, *sweep_on_worker(SETTINGS, str(path), held, "cpu")


def test_the_sweep_edits_every_triple_at_every_setting_and_shows_the_first(swept):
    held, part, grid = swept
    assert edit_scales(SETTINGS) == [(1.0, 3.0), (2.0, 3.0)]
    assert [(r["image_guidance"], r["text_guidance"]) for r in part["rows"]] == [
        (1.0, 3.0),
        (2.0, 3.0),
    ]
    assert part["triples"] == 4 and part["steps"] == "ddim2" and part["seed"] == 5
    for row in part["rows"]:
        assert row["edit_success_low"] <= row["edit_success"] <= row["edit_success_high"]
        low, high = row["preservation_error_low"], row["preservation_error_high"]
        assert low <= row["preservation_error"] <= high
    assert grid.shape == (2 * 4, 16, 16, 3) and grid.dtype == np.uint8  # 2 x (input, wanted, 2)
    assert np.array_equal(grid[0], held[0]["source"]) and np.array_equal(grid[4], held[1]["source"])
    assert np.array_equal(grid[1], held[0]["target"]) and np.array_equal(grid[5], held[1]["target"])
    assert part["shown"] == [held[0]["caption"], held[1]["caption"]]
    picture = grid_images({"instruct": grid}, {"instruct": part, "sweeps": []})["instruct"]
    assert picture.width == 4 * 96  # input, wanted, one edit per setting
    assert list(part["per_triple"]) == ["1,3", "2,3"]
    kinds = [t["meta"]["edit"]["kind"] for t in held]
    by_kind = part["by_kind"]  # (1, 3) and (2, 3) are equally near (1.5, 7.5): the first
    assert (by_kind["image_guidance"], by_kind["text_guidance"]) == (1.0, 3.0)
    assert {r["kind"]: r["triples"] for r in by_kind["rows"]} == {k: kinds.count(k) for k in kinds}
    successes = sum(r["edit_success"] * r["triples"] for r in by_kind["rows"])
    assert successes == sum(part["per_triple"]["1,3"]["success"])


def test_the_kind_table_is_read_at_the_setting_nearest_the_papers():
    assert nearest_paper_setting([(1.0, 7.5), (1.5, 7.5), (3.0, 1.0)]) == (1.5, 7.5)
    assert nearest_paper_setting([(3.0, 1.0), (1.0, 3.0)]) == (1.0, 3.0)


def test_report_metrics_plot_and_mlflow_get_the_rows_with_both_ends(swept):
    _, part, _ = swept
    results = {"instruct": part, "uncertainty": uncertainty(10)}
    record = metrics_record(part)
    assert "per_triple" not in record and "shown" not in record and record["rows"] == part["rows"]
    assert plot_rows(results) == part["rows"]
    metrics = flat_metrics(results)
    for key in ("edit_success", "edit_success_low", "clean_edit_high", "preservation_error_high"):
        assert metrics[f"instruct_2_3/{key}"] == part["rows"][1][key]
    kept = part["rows"][1]["others_kept"]  # None (not logged) where no triple has other objects
    assert metrics.get("instruct_2_3/others_kept") == kept
    lines = "\n".join(report_lines(results))
    assert "| 2 | 3 |" in lines and "4 held-out edit triples" in lines
    assert "| edit success | clean edit | others kept (triples) |" in lines
    assert f"({part['rows'][1]['others_scored']}) |" in lines
    assert "By edit kind, at s_I 1, s_T 3" in lines
    assert record["by_kind"] == part["by_kind"]
    for row in part["by_kind"]["rows"]:
        assert f"| {row['kind']} | {row['triples']} |" in lines
        assert metrics[f"instruct_1_3/{row['kind']}/edit_success_high"] == row["edit_success_high"]
    claims = {c.key: c for c in edit_claims(results)}
    assert claims["image_scale_preserves"].verdict == "not measurable"  # 4 triples < 10
    assert "4 triples < 10" in claims["image_scale_preserves"].evidence
    assert "one setting along this scale" in claims["text_scale_edits"].evidence
    decided = edit_claims({**results, "uncertainty": uncertainty(2)})
    assert decided[0].verdict in VERDICTS and "at s_T 3" in decided[0].evidence


def test_without_the_part_both_claims_and_the_report_say_why():
    results = {"instruct_skipped": "evaluate.edit_triples is 0", "uncertainty": uncertainty(10)}
    claims = edit_claims(results)
    assert [c.verdict for c in claims] == ["not measurable"] * 2
    assert all(c.evidence == "evaluate.edit_triples is 0" for c in claims)
    assert "Not evaluated: evaluate.edit_triples is 0." in report_lines(results)
    assert plot_rows(results) == [] and flat_metrics(results) == {}


def test_claims_are_judged_with_the_other_scale_nearest_the_papers():
    # s_T raises edit success at s_I 1.5 (the paper's default) and lowers it at s_I 3
    per_triple = {
        "1.5,1": _readout(0.2, 0.05),
        "1.5,7.5": _readout(0.9, 0.05, seed=1),
        "3,1": _readout(0.9, 0.02, seed=2),
        "3,7.5": _readout(0.2, 0.02, seed=3),
    }
    part = {"seed": 0, "per_triple": {k: {n: v.tolist() for n, v in values.items()}
                                      for k, values in per_triple.items()}}  # fmt: skip
    claims = {c.key: c for c in edit_claims({"instruct": part, "uncertainty": uncertainty(10)})}
    assert claims["text_scale_edits"].verdict == "reproduced"
    assert "at s_I 1.5" in claims["text_scale_edits"].evidence
    assert "at s_T 7.5" in claims["image_scale_preserves"].evidence


def test_triples_are_read_only_when_the_sweep_can_run(tmp_path):
    assert edit_triples(tmp_path, 0) == ([], "evaluate.edit_triples is 0")
    triples_found, why = edit_triples(tmp_path / "missing", 4)
    assert triples_found == [] and "run the shard_edits stage" in why
