"""The edit sweep's read-out, intervals and paired differences, and a sweep with a real model."""

import numpy as np
import pytest

from pipeline.config.schema import SyntheticScenesConfig
from pipeline.data.scene_edits import sample_edit_triple
from pipeline.data.synthetic_scenes import render_scene
from pipeline.evaluation.edit_sweep import (
    edit_sweep,
    instruct_claims,
    kind_rows,
    paired_difference,
    read_edits,
    summary_row,
    sweep_rows,
)
from pipeline.models import widen_for_instruct
from pipeline.sampling import SamplerSettings, SamplingModel
from pipeline.sampling.loading import load_sampling_model
from pipeline.text import get_tokenizer
from tests.sampling.conftest import write_model_file


def triples(resolution, count=12):
    drawn = [sample_edit_triple(i, 4, SyntheticScenesConfig(), held_out=True) for i in range(count)]
    return [
        {"source": np.asarray(render_scene(before, resolution)), "caption": text,
         "target": np.asarray(render_scene(after, resolution)),
         "meta": {"edit": edit, "source_scene": before}}
        for before, after, text, edit in filter(None, drawn)
    ]  # fmt: skip


def test_targets_read_as_successes_and_the_intervals_say_how_sure():
    held = triples(64)
    exact = read_edits(np.stack([t["target"] for t in held]), held)
    unedited = read_edits(np.stack([t["source"] for t in held]), held)
    assert exact["success"].all() and not exact["preservation_error"].any()
    assert not unedited["success"].any() and not unedited["preservation_error"].any()
    rows = sweep_rows({(1.5, 7.5): exact, (3.0, 7.5): unedited}, 0.95, 200, 0)
    assert [r["edit_success"] for r in rows] == [1.0, 0.0]
    assert [r["clean_edit"] for r in rows] == [1.0, 0.0]  # the input keeps all but edits nothing
    with_others = int((~np.isnan(exact["others_kept"])).sum())
    assert 0 < with_others < len(held)  # some scenes have objects besides the edited one
    assert [r["others_scored"] for r in rows] == [with_others] * 2
    assert [r["others_kept"] for r in rows] == [1.0, 1.0]
    assert 0.6 < rows[0]["edit_success_low"] < 1.0 == rows[0]["edit_success_high"]  # n = 12
    assert rows[0]["preservation_error_low"] == rows[0]["preservation_error_high"] == 0.0
    point, low, high = paired_difference(exact["success"], unedited["success"], 0.95, 200, 0)
    assert (point, low, high) == (1.0, 1.0, 1.0)


def test_a_clean_edit_needs_the_edit_and_every_other_object_kept():
    values = {  # edited + kept, edited + lost the other, edited (nothing else), not edited
        "success": np.array([1.0, 1.0, 1.0, 0.0]),
        "others_kept": np.array([1.0, 0.0, np.nan, 1.0]),
        "preservation_error": np.zeros(4),
    }
    row = summary_row(values, 0.95, 50, 0)
    assert (row["edit_success"], row["clean_edit"]) == (0.75, 0.5)
    assert (row["others_scored"], row["others_kept"]) == (3, 2 / 3)
    alone = summary_row({k: v[2:3] for k, v in values.items()}, 0.95, 50, 0)
    assert alone["others_scored"] == 0 and alone["others_kept"] is None
    assert alone["others_kept_low"] is None and alone["clean_edit"] == 1.0


def test_rows_per_edit_kind_count_each_kinds_own_triples():
    held = triples(64, count=24)
    kinds = [t["meta"]["edit"]["kind"] for t in held]
    recoloured = [
        t["target"] if t["meta"]["edit"]["kind"] == "recolour" else t["source"] for t in held
    ]
    edits = np.stack(recoloured)
    rows = {r["kind"]: r for r in kind_rows(read_edits(edits, held), held, 0.95, 200, 0)}
    assert sorted(rows) == sorted(set(kinds)) and "recolour" in rows and len(rows) > 1
    assert {k: r["triples"] for k, r in rows.items()} == {k: kinds.count(k) for k in rows}
    assert rows["recolour"]["edit_success"] == 1.0
    assert all(r["edit_success"] == 0.0 for k, r in rows.items() if k != "recolour")
    assert all(
        r["edit_success_low"] <= r["edit_success"] <= r["edit_success_high"] for r in rows.values()
    )
    for kind, row in rows.items():
        chosen = [t for t in held if t["meta"]["edit"]["kind"] == kind]
        scored = sum(len(t["meta"]["source_scene"]["objects"]) > (kind != "add") for t in chosen)
        assert row["others_scored"] == scored
        assert row["others_kept"] == (1.0 if scored else None)  # inputs and targets keep them


@pytest.fixture(scope="module")
def instruct_model(tmp_path_factory):
    tokenizer = get_tokenizer("clip")
    path = write_model_file(tmp_path_factory.mktemp("instruct") / "m.pt", tokenizer)
    text2im = load_sampling_model(path)
    widened = widen_for_instruct(text2im.model).eval()
    return SamplingModel.of_network(widened, text2im.tokenizer, text2im.diffusion_settings)


def test_a_sweep_edits_every_triple_at_every_setting(instruct_model):
    held = triples(16, count=4)
    settings = SamplerSettings(steps="ddim2")
    scales = [(1.0, 1.0), (1.5, 7.5)]
    swept = edit_sweep(instruct_model, held, settings, scales)
    assert list(swept) == scales
    for values in swept.values():
        assert values["success"].shape == values["preservation_error"].shape == (len(held),)
    again = edit_sweep(instruct_model, held, settings, scales[:1])
    assert np.array_equal(
        again[(1.0, 1.0)]["preservation_error"], swept[(1.0, 1.0)]["preservation_error"]
    )


def _readout(success_rate, error, n=40, seed=0):
    rng = np.random.default_rng(seed)
    success = (rng.random(n) < success_rate).astype(float)
    return {"success": success, "preservation_error": np.clip(rng.normal(error, 0.01, n), 0, 1)}


def test_the_trade_off_claims_follow_the_paired_differences():
    trade_off = {  # more s_I: less change outside and fewer edits; more s_T: more edits
        (1.0, 7.5): _readout(0.8, 0.10), (2.0, 7.5): _readout(0.3, 0.02, seed=1),
        (1.5, 3.0): _readout(0.2, 0.05, seed=2), (1.5, 7.5): _readout(0.7, 0.05, seed=3),
    }  # fmt: skip
    claims = {c.key: c for c in instruct_claims(trade_off, 0.95, 200, 0, min_samples=10)}
    assert claims["image_scale_preserves"].verdict == "reproduced"
    assert claims["text_scale_edits"].verdict == "reproduced"
    assert "s_T 7.5 minus 3" in claims["text_scale_edits"].evidence
    reversed_text = {**trade_off, (1.5, 3.0): _readout(0.95, 0.05, seed=2)}
    claims = {c.key: c for c in instruct_claims(reversed_text, 0.95, 200, 0, min_samples=10)}
    assert claims["text_scale_edits"].verdict == "contradicted"
    noise = {(1.0, 7.5): _readout(0.5, 0.05), (2.0, 7.5): _readout(0.5, 0.05, seed=1)}
    claims = {c.key: c for c in instruct_claims(noise, 0.95, 200, 0, min_samples=10)}
    assert claims["image_scale_preserves"].verdict == "inconclusive"
    assert claims["text_scale_edits"].verdict == "not measurable"  # one s_T only
    few = instruct_claims(trade_off, 0.95, 200, 0, min_samples=100)
    assert {c.verdict for c in few} == {"not measurable"}
