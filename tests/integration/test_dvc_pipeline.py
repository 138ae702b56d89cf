"""`dvc repro` of the real stages on the ci profile, tracked in a real local MLflow store."""

import hashlib
import json
import re
import subprocess

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from pipeline.config import load_config
from pipeline.data.shard_reader import iter_shard_samples
from pipeline.models.model_file import load_model
from tests.integration.conftest import BIN, run


def test_dvc_repro_runs_the_stages_and_links_their_runs(ci_pipeline):
    root, _ = ci_pipeline
    manifest = json.loads((root / "data/shards/manifest.json").read_text())
    assert manifest["written"] + manifest["skipped"] == manifest["inputs"] == 256
    assert yaml.safe_load((root / "data/shards/config.yaml").read_text())["profile"] == "ci"
    shard_metrics = json.loads((root / "metrics/shard.json").read_text())
    assert shard_metrics["written"] == 256

    model, meta = load_model(root / "models/base.pt")
    assert meta["step"] == 30 and meta["stage"] == "pretrain_base"
    assert model.image_size == 16
    train_metrics = json.loads((root / "metrics/pretrain_base.json").read_text())
    assert train_metrics["step"] == 30 and train_metrics["final_loss"] > 0
    assert (root / "samples/pretrain_base.png").stat().st_size > 0

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    shard_run = client.get_run(manifest["run_id"])
    train_run = client.get_run(meta["mlflow_run_id"])
    assert shard_run.data.tags["glide.stage"] == "shard"
    assert train_run.data.tags["glide.stage"] == "pretrain_base"
    parent_id = shard_run.data.tags["mlflow.parentRunId"]
    assert train_run.data.tags["mlflow.parentRunId"] == parent_id
    parent = client.get_run(parent_id)
    assert parent.data.tags["glide.kind"] == "pipeline"
    assert parent.data.tags["glide.pipeline_origin"] == "dvc"
    assert parent.data.tags["glide.git_dirty"] == "false"
    assert train_run.data.params["pretrain_base.max_steps"] == "30"
    assert "pretrain_base/final_loss" in train_run.data.metrics
    assert "train/loss" in train_run.data.metrics  # per-step logging from the Ray worker
    artifacts = [a.path for a in client.list_artifacts(train_run.info.run_id, "samples")]
    assert any(path.endswith(".png") for path in artifacts)


def test_second_repro_is_a_no_op(ci_pipeline):
    root, _ = ci_pipeline
    out = run([str(BIN / "dvc"), "repro"], root)
    assert "didn't change" in out or "up to date" in out, out
    status = subprocess.run(
        [str(BIN / "dvc"), "status"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    assert "changed" not in status, status


def test_params_show_effective_values_and_an_unused_profile_changes_nothing(ci_pipeline):
    root, _ = ci_pipeline
    dvc = str(BIN / "dvc")
    shown = json.loads(run([dvc, "params", "diff", "--all", "--json"], root, quiet=True))
    profile_values = shown["conf/profiles/ci.yaml"]
    ci = load_config(["profile=ci"], params_path=None, conf_dir=root / "conf")
    assert profile_values["pretrain_base.lr"]["new"] == ci.pretrain_base.lr
    files = {name: (root / f"conf/profiles/{name}.yaml") for name in ("paper", "ci")}
    saved = {name: path.read_text() for name, path in files.items()}
    try:
        for name, lr in (("paper", 1.0e-5), ("ci", 7.0e-4)):
            profile = yaml.safe_load(saved[name])
            profile["pretrain_base"]["lr"] = lr
            files[name].write_text(yaml.safe_dump(profile, sort_keys=False))
            status = run([dvc, "status"], root, quiet=True)
            if name == "paper":  # not the selected profile: nothing to rerun
                assert "changed" not in status, status
        assert "pretrain_base:" in status
        assert "train_upsampler:" not in status and "shard:" not in status  # read no such value
        diff = json.loads(run([dvc, "params", "diff", "--json"], root, quiet=True))
        assert list(diff) == ["conf/profiles/ci.yaml"]
        assert list(diff["conf/profiles/ci.yaml"]) == ["pretrain_base.lr"]
        changed = diff["conf/profiles/ci.yaml"]["pretrain_base.lr"]
        assert (changed["old"], changed["new"]) == (
            profile_values["pretrain_base.lr"]["new"],
            7.0e-4,
        )
    finally:
        for name, path in files.items():
            path.write_text(saved[name])


def test_exp_run_sets_any_parameter(ci_pipeline):
    root, _ = ci_pipeline
    dvc = str(BIN / "dvc")
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.invalid"]
    # as a user does after `dvc repro`: commit dvc.lock and the small results (metrics, plots)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "pipeline results"], cwd=root, check=True)
    try:
        run([dvc, "exp", "run", "-n", "e128", "shard", "-S", "shard.num_samples=128"], root)
        metrics = json.loads((root / "metrics/shard.json").read_text())
        assert metrics["inputs"] == 128
        params = yaml.safe_load((root / "params.yaml").read_text())
        assert params["shard"]["num_samples"] == 128
        shown = run([dvc, "exp", "show", "--no-pager", "--json"], root)
        assert "128" in shown
        # metrics and plots diffs compare the experiment with the committed pipeline results
        listed = run([dvc, "exp", "ls", "--name-only"], root, quiet=True).split()
        assert "e128" in listed
        diff = json.loads(run([dvc, "metrics", "diff", "HEAD", "e128", "--json"], root, quiet=True))
        assert diff["metrics/shard.json"]["inputs"] == {"old": 256, "new": 128, "diff": -128}
        plots = json.loads(run([dvc, "plots", "diff", "HEAD", "e128", "--json"], root, quiet=True))
        assert not plots.get("errors"), plots.get("errors")
        revisions = plots["data"]["FID against guidance scale"][0]["revisions"]
        assert set(revisions) == {"HEAD", "e128"}
        grids = plots["data"]["samples/pretrain_base.png"]  # image plots: one per revision
        assert {rev for grid in grids for rev in grid["revisions"]} == {"HEAD", "e128"}
    finally:  # put the workspace back to the pipeline's own results for the other tests
        subprocess.run(["git", "checkout", "--", "."], cwd=root, check=True)
        run([dvc, "checkout", "--force"], root)
    assert torch.load(root / "models/base.pt", weights_only=True)["step"] == 30
    assert json.loads((root / "metrics/shard.json").read_text())["inputs"] == 256


def test_finetune_cfg_starts_from_base_and_logs_both_losses(ci_pipeline):
    root, _ = ci_pipeline
    model, meta = load_model(root / "models/cfg.pt")
    assert meta["step"] == 20 and meta["stage"] == "finetune_cfg"
    base_sha = hashlib.sha256((root / "models/base.pt").read_bytes()).hexdigest()
    assert meta["extra"]["init_from_sha256"] == base_sha
    assert (root / "samples/finetune_cfg.png").stat().st_size > 0
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    run_ = client.get_run(meta["mlflow_run_id"])
    assert run_.data.tags["glide.stage"] == "finetune_cfg"
    assert run_.data.params["finetune_cfg.caption_drop_prob"] == "0.2"
    assert {"train/loss_cond", "train/loss_uncond"} <= set(run_.data.metrics)
    base_run = client.get_run(load_model(root / "models/base.pt")[1]["mlflow_run_id"])
    assert run_.data.tags["mlflow.parentRunId"] == base_run.data.tags["mlflow.parentRunId"]


def test_glide_sample_command_on_the_trained_model(ci_pipeline, tmp_path):
    root, _ = ci_pipeline
    out = tmp_path / "samples"
    log = run(
        [
            str(BIN / "glide-sample"),
            "--model",
            "models/cfg.pt",
            "--prompt",
            "a red circle",
            "--prompt",
            "a blue square",
            "--guidance",
            "3",
            "--steps",
            "ddim5",
            "--batch",
            "2",
            "--out",
            str(out),
        ],
        root,
    )
    assert len(list(out.glob("00*_00*.png"))) == 4 and (out / "grid.png").exists()
    assert "wrote 4 images" in log


def test_finetune_instruct_trains_on_edit_triples_and_edits_from_an_instruction(
    ci_pipeline, tmp_path
):
    root, _ = ci_pipeline
    counts = json.loads((root / "metrics/shard_edits.json").read_text())
    assert counts["written"] + counts["skipped"] == 64 and counts["val_triples"] > 0
    scenes = [  # ci's shard_edits.object_count_weights [0, 1, 1]: no one-object edit scenes
        len(sample["meta"]["source_scene"]["objects"])
        for tar in sorted((root / "data/edit_shards").glob("*/shard-*.tar"))
        for sample in iter_shard_samples(tar, images=("source",), with_meta=True)
    ]
    assert len(scenes) == counts["written"] and np.mean(np.array(scenes) >= 2) >= 0.9
    model, meta = load_model(root / "models/instruct.pt")
    assert model.config["instruct"] and meta["step"] == 20 and meta["stage"] == "finetune_instruct"
    cfg_sha = hashlib.sha256((root / "models/cfg.pt").read_bytes()).hexdigest()
    assert meta["extra"]["init_from_sha256"] == cfg_sha
    assert (root / "samples/finetune_instruct.png").stat().st_size > 0
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "in.png")
    edit = ["--edit", str(tmp_path / "in.png"), "--instruction", "make the circle blue"]
    run([str(BIN / "glide-sample"), *edit, "--steps", "ddim5", "--out", str(tmp_path / "o")], root)
    assert (tmp_path / "o/000_000.png").exists() and (tmp_path / "o/grid.png").exists()


def test_finetune_inpaint_widens_the_cfg_model_and_edits_images(ci_pipeline, tmp_path):
    root, _ = ci_pipeline
    model, meta = load_model(root / "models/inpaint.pt")
    assert model.inpaint and meta["step"] == 20 and meta["stage"] == "finetune_inpaint"
    cfg_sha = hashlib.sha256((root / "models/cfg.pt").read_bytes()).hexdigest()
    assert meta["extra"]["init_from_sha256"] == cfg_sha
    assert (root / "samples/finetune_inpaint.png").stat().st_size > 0

    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    mask = np.full((16, 16), 255, dtype=np.uint8)
    mask[4:12, 4:12] = 0
    Image.fromarray(image).save(tmp_path / "in.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    edit = ["--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png")]
    for name, extra in (("edit", []), ("baseline", ["--baseline-replace"])):
        run(
            [
                str(BIN / "glide-sample"),
                "--prompt",
                "a red circle",
                "--steps",
                "ddim5",
                "--out",
                str(tmp_path / name),
                *edit,
                *extra,
            ],
            root,
        )
        edited = np.asarray(Image.open(tmp_path / name / "000_000.png"))
        assert np.array_equal(edited[mask == 255], image[mask == 255])


def test_train_noised_clip_trains_the_noised_and_the_evaluation_clip(ci_pipeline):
    from pipeline.models.clip_file import load_noised_clip
    from pipeline.models.eval_clip import load_eval_clip

    root, _ = ci_pipeline
    record = json.loads((root / "metrics/train_noised_clip.json").read_text())
    noised, evaluation = record["noised_clip"], record["eval_clip"]
    assert noised["step"] == 20 and evaluation["step"] == 10
    for t in (0, 250, 500, 750):
        assert 0.0 <= noised[f"val/t{t}/text_to_image"] <= 1.0
    assert "val/t250/text_to_image" not in evaluation  # the clean CLIP is validated at t = 0
    assert evaluation["metric_name"] == "clip_score_proxy"

    guidance, info = load_noised_clip(root / "models/noised_clip.pt")
    assert info["extra"]["noised"] is True
    assert info["diffusion"] == {"diffusion_steps": 1000, "noise_schedule": "squaredcos_cap_v2"}
    assert load_eval_clip(root / "models/eval_clip.pt").metric_name == "clip_score_proxy"
    clean, _ = load_noised_clip(root / "models/eval_clip.pt")
    # its own seed: a different network, not a copy of the guidance CLIP
    assert not torch.equal(clean.visual.conv1.weight, guidance.visual.conv1.weight)

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    history = client.get_run(info["mlflow_run_id"]).data.metrics
    assert "val/t750/image_to_text" in history and "train/loss" in history
    assert "eval_clip/val/t0/text_to_image" in history and "eval_clip/train/loss" in history


def test_evaluate_writes_metrics_plots_report_and_logs_them_on_the_pipeline_run(ci_pipeline):
    root, log = ci_pipeline
    for stage in ("train_upsampler", "train_noised_clip", "evaluate"):
        assert f"Running stage '{stage}'" in log
    # the sweeps that run after the guidance captions say when they start and end
    for part in (r"two-object sweep, \d+ captions", r"instruction-editing sweep, \d+ triples"):
        assert re.search(rf"\[evaluate\] {part} \.\.\.\n", log), part
        assert re.search(rf"\[evaluate\] {part}: done in \d+ s", log), part
    record = json.loads((root / "metrics/eval.json").read_text())
    # one entry per sweep point (ci: the base model alone, classifier-free 1 and 3, CLIP
    # guidance 2), counts beside
    assert [(r["guidance"], r["scale"]) for r in record["sweeps"]] == [
        ("base", 1.0),
        ("cfg", 1.0),
        ("cfg", 3.0),
        ("clip", 2.0),
    ]
    for row in record["sweeps"]:
        assert row["num_fake"] == 8 and row["num_real"] == 8
        assert row["fid"] > 0 and "clip_score_proxy" in row  # our own CLIP: named as a proxy
    assert record["cascade"]["num_fake"] == 4 and record["inpainting"]["num_fake"] == 2
    assert set(record["claims"]) == {
        "clip_score_rises",
        "fid_u_shaped",
        "cfg_beats_clip_guidance",
        "inpainter_beats_replacement",
        "upsampler_beats_bicubic",
        "cfg_raises_pair_following",
        "image_scale_preserves",
        "text_scale_edits",
    }
    # 8 samples (4 upsampled, 2 inpainted, 4 two-object captions, 4 instruction edits) are below
    # evaluate.min_claim_samples: nothing decided
    assert set(record["claims"].values()) == {"not measurable"}
    for row in record["sweeps"]:
        assert row["fid_low"] <= row["fid"] <= row["fid_high"]  # both ends kept
    assert "replicates" not in record and record["eval_clip_retrieval"]["pairs"] == 8
    report = (root / "reports/eval.md").read_text()
    assert "not the standard CLIP score" in report and "95% intervals" in report
    assert "below evaluate.min_claim_samples=10" in report
    rows = json.loads((root / "plots/guidance_sweep_cfg.json").read_text())
    assert [r["scale"] for r in rows] == [1.0, 3.0]
    # the instruction-editing sweep: 4 held-out triples at s_I 1 and 2 (s_T 3)
    edits = json.loads((root / "plots/instruct_tradeoff.json").read_text())
    assert [(r["image_guidance"], r["text_guidance"], r["triples"]) for r in edits] == [
        (1.0, 3.0, 4),
        (2.0, 3.0, 4),
    ]
    assert record["instruct"]["rows"] == edits and "per_triple" not in record["instruct"]
    assert "## Instruction editing" in report and "| 2 | 3 |" in report
    assert "By edit kind, at s_I 1, s_T 3" in report and "shown" not in record["instruct"]
    assert sum(r["triples"] for r in record["instruct"]["by_kind"]["rows"]) == 4
    # the two-object sweep: 4 held-out relation captions, the base model and both cfg scales
    pairs = json.loads((root / "plots/pair_sweep.json").read_text())
    assert [(r["guidance"], r["scale"], r["captions"]) for r in pairs] == [
        ("base", 1.0, 4),
        ("cfg", 1.0, 4),
        ("cfg", 3.0, 4),
    ]
    assert record["pairs"]["rows"] == pairs and "per_caption" not in record["pairs"]
    assert "## Two-object compositions" in report and "4 captions < 10" in report
    plots = run([str(BIN / "dvc"), "plots", "show", "--json"], root)
    assert "FID against CLIP score" in plots and "Preservation error against edit" in plots

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    eval_run = client.get_run(client.get_run(record["mlflow_run_id"]).info.run_id)
    parent = client.get_run(eval_run.data.tags["mlflow.parentRunId"])
    assert parent.data.metrics["cfg_3/fid"] == pytest.approx(record["sweeps"][2]["fid"])
    assert "cascade/psnr_bicubic" in parent.data.metrics
    logged = [a.path for a in client.list_artifacts(parent.info.run_id, "evaluation")]
    assert "evaluation/eval.md" in logged and "evaluation/eval_sweep.png" in logged
    assert "evaluation/eval_instruct.png" in logged and "evaluation/eval_pairs.png" in logged
    assert parent.data.metrics["pairs_cfg_3/all_rate"] == pairs[2]["all_rate"]
    assert parent.data.metrics["instruct_2_3/edit_success"] == edits[1]["edit_success"]
