"""Killing the training stage (SIGKILL) and running it again resumes from its last checkpoint and
finishes at the configured step with the same model, bit for bit, as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import torch

from tests.integration.conftest import run, stage_env


def newest_checkpoint(folder):
    found = list(folder.glob("pretrain_base/*/last.ckpt")) if folder.exists() else []
    return found[0] if found else None


def test_sigkilled_training_resumes_to_the_same_model(ci_pipeline):
    root, _ = ci_pipeline
    args = [
        sys.executable,
        "-m",
        "stages.pretrain_base",
        "pretrain_base.checkpoint_dir=ckpt_killed",
        "pretrain_base.output=models/base_resumed.pt",
        "pretrain_base.checkpoint_every_steps=5",
        "pretrain_base.sample_every_steps=0",
    ]
    kills = 0
    for _attempt in range(3):  # kill it at a checkpoint, up to three times
        proc = subprocess.Popen(
            args,
            cwd=root,
            env=stage_env(),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        before = newest_checkpoint(root / "ckpt_killed")
        before_step = torch.load(before, weights_only=True)["global_step"] if before else 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            ckpt = newest_checkpoint(root / "ckpt_killed")
            if ckpt is not None and ckpt.stat().st_size > 0:
                try:
                    step = torch.load(ckpt, weights_only=True, mmap=True)["global_step"]
                except (RuntimeError, EOFError):
                    step = before_step
                if step > before_step:
                    os.killpg(proc.pid, signal.SIGKILL)
                    kills += 1
                    break
            time.sleep(0.05)
        proc.wait(timeout=60)
        if proc.returncode != -signal.SIGKILL:
            break  # it finished before we caught a new checkpoint
    assert kills >= 1, "the stage finished before any checkpoint could be interrupted"
    assert not (root / "models/base_resumed.pt").exists()

    run(args, root)
    resumed = torch.load(root / "models/base_resumed.pt", weights_only=True)
    metrics = json.loads((root / "metrics/pretrain_base.json").read_text())
    assert metrics["resumed_from_step"] > 0 and metrics["step"] == 30
    # The reference: the same command, never interrupted, from an empty checkpoint folder.
    uninterrupted = [
        *args[:3],
        "pretrain_base.checkpoint_dir=ckpt_uninterrupted",
        "pretrain_base.output=models/base_uninterrupted.pt",
        *args[5:],
    ]
    run(uninterrupted, root)
    reference = torch.load(root / "models/base_uninterrupted.pt", weights_only=True)
    assert resumed["step"] == reference["step"] == 30
    assert resumed["state_dict"].keys() == reference["state_dict"].keys()
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name
