"""Killing a training stage (SIGKILL) and running it again resumes from its last checkpoint and
finishes at the configured step with the same model, bit for bit, as the uninterrupted run that
`dvc repro` made with the same configuration (which also shows that the same config gives the
same model and metrics twice)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.integration.conftest import run, stage_env

# stage -> the models it trains: (model file, its config section, key in the metrics JSON).
# The diffusion stages (pretrain_base, finetune_*, train_upsampler) share one module and loop:
# pretrain_base's resume is killed twice with two workers in test_scale_out, and the resumed
# input streams of triples and upsampler pairs are checked in test_edit_shards / test_train_input;
# the CLIP stage's loop is another, killed here.
STAGES = {
    "train_noised_clip": [
        ("models/noised_clip.pt", "train_noised_clip", "noised_clip"),
        ("models/eval_clip.pt", "eval_clip", "eval_clip"),
    ],
}
FINAL_LOSS_KEYS = ("final_loss", "final_mse", "final_vb")


def resumed_name(output):
    return output.replace("models/", "models/resumed_")


def newest_checkpoint(folder):
    found = sorted(folder.glob("*/*/last.ckpt"), key=os.path.getmtime) if folder.exists() else []
    return found[-1] if found else None


def checkpoint_step(path, default):
    try:
        return torch.load(path, weights_only=True, mmap=True)["global_step"]
    except (RuntimeError, EOFError, KeyError, OSError):
        return default  # being written


def kill_at_checkpoints(args, root, folder, attempts):
    """Start the stage and SIGKILL it right after each new checkpoint, up to ``attempts`` times;
    returns how many kills landed."""
    kills = 0
    for _attempt in range(attempts):
        proc = subprocess.Popen(
            args,
            cwd=root,
            env=stage_env(),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        before = newest_checkpoint(folder)
        before_step = checkpoint_step(before, 0) if before else 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            ckpt = newest_checkpoint(folder)
            new = ckpt is not None and ckpt.stat().st_size > 0
            if new and checkpoint_step(ckpt, before_step) > before_step:
                os.killpg(proc.pid, signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.05)
        proc.wait(timeout=60)
        if proc.returncode != -signal.SIGKILL:
            break  # it finished before we caught a new checkpoint
    return kills


@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkilled_stage_resumes_to_the_uninterrupted_model(ci_pipeline, stage):
    root, _ = ci_pipeline
    trained = STAGES[stage]
    metrics_path = root / f"metrics/{stage}.json"
    pipeline_record = json.loads(metrics_path.read_text())
    folder = root / f"ckpt_killed_{stage}"
    args = [sys.executable, "-m", f"stages.{stage}"]
    for output, section, _ in trained:
        args += [
            f"{section}.checkpoint_dir={folder}",
            f"{section}.output={resumed_name(output)}",
            f"{section}.checkpoint_every_steps=5",
        ]
    if stage != "train_noised_clip":
        args.append(f"{stage}.sample_every_steps=0")
    # one kill each; several kills in a row: test_scale_out's two-worker run
    assert kill_at_checkpoints(args, root, folder, attempts=1) == 1, "finished before any kill"
    assert not (root / resumed_name(trained[0][0])).exists()

    try:
        run(args, root)
        record = json.loads(metrics_path.read_text())
    finally:  # later tests read the pipeline's own metrics file
        metrics_path.write_text(json.dumps(pipeline_record))
    first_key = trained[0][2]
    assert (record[first_key] if first_key else record)["resumed_from_step"] > 0
    for output, _, key in trained:
        pipeline_model = torch.load(root / output, weights_only=True)
        resumed = torch.load(root / resumed_name(output), weights_only=True)
        assert resumed["step"] == pipeline_model["step"] > 0
        assert resumed["state_dict"].keys() == pipeline_model["state_dict"].keys()
        for name, tensor in pipeline_model["state_dict"].items():
            assert torch.equal(resumed["state_dict"][name], tensor), f"{output}: {name}"
        metrics = record[key] if key else record
        expected = pipeline_record[key] if key else pipeline_record
        assert metrics["step"] == expected["step"] == pipeline_model["step"]
        for name in FINAL_LOSS_KEYS:
            if name in expected:
                assert metrics[name] == expected[name], name
