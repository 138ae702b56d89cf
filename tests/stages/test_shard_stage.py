"""The shard stage as a user runs it: its summary, and where its metrics go."""

import json
from pathlib import Path

import pytest
from PIL import Image

from pipeline.config import load_config
from stages import shard as shard_stage
from tests.data.helpers import encode, pattern

REPO = Path(__file__).resolve().parents[2]


def shard_section(*overrides: str):
    return load_config(["profile=ci", *overrides], params_path=None, conf_dir=REPO / "conf").shard


def test_metrics_follow_the_output_dir_unless_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shard_stage.metrics_path(shard_section()) == Path("metrics/shard.json")
    same = shard_section("shard.output_dir=./data/shards/")
    assert shard_stage.metrics_path(same) == Path("metrics/shard.json")
    moved = shard_section("shard.output_dir=elsewhere/shards")
    assert shard_stage.metrics_path(moved) == Path("elsewhere/shards/metrics.json")
    chosen = shard_section("shard.output_dir=elsewhere", "shard.metrics=m/side.json")
    assert shard_stage.metrics_path(chosen) == Path("m/side.json")


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for i in range(6):
        (root / f"art_{i}.png").write_bytes(encode(pattern(40, 40, i), "PNG"))
        (root / f"art_{i}.txt").write_text(f"picture {i}")
    (root / "clear.png").write_bytes(encode(Image.new("RGBA", (40, 40), (0, 0, 0, 0)), "PNG"))
    (root / "clear.txt").write_text("nothing to see")
    (root / "tiny.png").write_bytes(encode(pattern(8, 8, 9), "PNG"))
    (root / "tiny.txt").write_text("too small")
    (root / "uncaptioned.png").write_bytes(encode(pattern(40, 40, 7), "PNG"))
    return root


@pytest.mark.usefixtures("ray_session")
def test_stage_on_own_folder_prints_a_summary_and_keeps_pipeline_metrics(
    images, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("GLIDE_PIPELINE_KEY", "shard-stage-test")
    args = [
        "profile=ci",
        "shard.source=folder",
        f"shard.input_path={images}",
        "shard.output_dir=trial",
        "shard.val_fraction=0.0",
        "shard.max_skipped_fraction=0.5",
    ]
    assert shard_stage.main(args) == 0

    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [
        "shard: wrote 7 of 9 inputs to trial (train 7, val 0)",
        "shard: skipped 2: image too small 1, missing caption 1; "
        'listed under "skipped_inputs" in trial/manifest.json',
        "shard: kept 1 blank image (one plain colour, e.g. a fully transparent PNG); "
        'listed under "blank_inputs" in trial/manifest.json; '
        "shard.skip_blank_images=true skips them",
        "shard: metrics in trial/metrics.json",
    ]
    metrics = json.loads((tmp_path / "trial/metrics.json").read_text())
    assert metrics["written"] == 7 and metrics["skipped"] == 2 and metrics["blank_images"] == 1
    assert not (tmp_path / "metrics").exists()  # the pipeline's metrics/shard.json: untouched
    manifest = json.loads((tmp_path / "trial/manifest.json").read_text())
    assert {s["source"] for s in manifest["skipped_inputs"]} == {"tiny.png", "uncaptioned.png"}
