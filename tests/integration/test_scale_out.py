"""Training beyond one worker, through the stage entry point: two workers on a real two-node Ray
cluster (data parallel and sharded), killed and resumed; and a stage that asks for more CPUs than
Ray has, which must fail at once, naming the settings to change."""

import json
import subprocess
import sys
import time

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.config import load_config
from pipeline.models.model_file import load_model
from tests.integration.conftest import BIN, run, stage_env
from tests.integration.repo_copy import copy_repo
from tests.integration.test_kill_and_resume import kill_at_checkpoints

STAGE = [sys.executable, "-m", "stages.pretrain_base"]
STEPS = 30  # the ci profile's


@pytest.fixture(scope="module")
def cluster_repo(tmp_path_factory, ci_pipeline, two_node_cluster):
    """A fresh copy of the repository whose stages train on the ci pipeline's shards on the
    two-node cluster: ``(root, settings)``."""
    root = copy_repo(tmp_path_factory.mktemp("scale_out"))
    settings = [
        f"ray.address={two_node_cluster}",
        f"shard.output_dir={ci_pipeline[0] / 'data/shards'}",
        "pretrain_base.num_workers=2",
        "pretrain_base.cpus_per_worker=2",  # nodes of 3 CPUs: one worker on each
        "pretrain_base.torch_threads=1",
        "pretrain_base.checkpoint_every_steps=5",
    ]
    return root, settings


def outputs(name):
    return [f"pretrain_base.output=models/{name}.pt", f"pretrain_base.checkpoint_dir=ckpt_{name}"]


def train(root, settings, name, *extra):
    """Run the stage; its metrics record and model file."""
    run([*STAGE, *settings, *outputs(name), *extra], root)
    record = json.loads((root / "metrics/pretrain_base.json").read_text())
    return record, torch.load(root / f"models/{name}.pt", weights_only=True)


@pytest.fixture(scope="module")
def ddp_run(cluster_repo):
    root, settings = cluster_repo
    return train(root, settings, "ddp")


def test_two_workers_on_two_nodes_train_and_agree(cluster_repo, ddp_run):
    root, _ = cluster_repo
    record, payload = ddp_run
    assert record["step"] == STEPS and record["workers"] == 2 and record["nodes"] == 2
    assert record["replicas_identical"] == 1  # every worker ended with the same weights and EMA
    model, meta = load_model(root / "models/ddp.pt")
    assert meta["step"] == STEPS and meta["stage"] == "pretrain_base" and model.image_size == 16
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    stage_run = client.get_run(payload["mlflow_run_id"])
    assert stage_run.info.status == "FINISHED"
    assert stage_run.data.params["pretrain_base.num_workers"] == "2"
    assert stage_run.data.metrics["pretrain_base/workers"] == 2
    assert stage_run.data.metrics["pretrain_base/nodes"] == 2
    assert "train/loss" in stage_run.data.metrics  # logged by a worker on the cluster
    grids = [a.path for a in client.list_artifacts(stage_run.info.run_id, "samples")]
    assert any(path.endswith(".png") for path in grids)


def same_weights(a, b):
    assert a["step"] == b["step"] and a["state_dict"].keys() == b["state_dict"].keys()
    for name, tensor in a["state_dict"].items():
        assert torch.equal(b["state_dict"][name], tensor), name


def test_two_worker_run_killed_twice_resumes_to_the_uninterrupted_model(cluster_repo, ddp_run):
    root, settings = cluster_repo
    args = [*STAGE, *settings, *outputs("ddp_killed")]
    assert kill_at_checkpoints(args, root, root / "ckpt_ddp_killed", attempts=2) == 2
    record, payload = train(root, settings, "ddp_killed")
    assert record["resumed_from_step"] >= 10 and record["step"] == STEPS
    same_weights(ddp_run[1], payload)
    assert record["final_loss"] == ddp_run[0]["final_loss"]


def test_sharded_fsdp_run_killed_and_resumed_gives_the_data_parallel_model(cluster_repo, ddp_run):
    """strategy fsdp (FSDP2 over gloo): two CPU workers each hold half of every parameter,
    gradient, AdamW state and EMA; killed after a gathered checkpoint and resumed, the run ends
    with the model of the unsharded data-parallel run (up to float rounding), in the ordinary
    model file that the next stage and the sampler load."""
    from pipeline.training.diffusion_stage import check_init_model
    from pipeline.training.model_setup import build_tokenizer, glide_model_kwargs

    root, settings = cluster_repo
    settings = [*settings, "pretrain_base.strategy=fsdp"]
    args = [*STAGE, *settings, *outputs("fsdp")]
    assert kill_at_checkpoints(args, root, root / "ckpt_fsdp", attempts=1) == 1
    record, payload = train(root, settings, "fsdp")
    assert record["resumed_from_step"] >= 5 and record["step"] == STEPS
    assert record["workers"] == 2 and record["nodes"] == 2
    reference = ddp_run[1]["state_dict"]
    assert payload["state_dict"].keys() == reference.keys()
    for name, tensor in payload["state_dict"].items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=1e-5, msg=name)

    cfg = load_config(["profile=ci"], params_path=None, conf_dir=root / "conf")
    tokenizer = build_tokenizer(cfg.base_model)
    kwargs = glide_model_kwargs(cfg.base_model, tokenizer.vocab_size)
    check_init_model(root / "models/fsdp.pt", kwargs, tokenizer.identity)  # finetune_cfg's check
    out = root / "samples/fsdp"
    cli = ["--model", "models/fsdp.pt", "--prompt", "a red circle", "--guidance", "1"]
    sample = [str(BIN / "glide-sample"), *cli, "--steps", "ddim2", "--out", str(out)]
    assert "wrote 1 images" in run(sample, root)
    assert (out / "grid.png").exists()


def test_a_stage_asking_for_more_cpus_than_ray_has_fails_at_once_naming_the_settings(tmp_path):
    """The ci profile's local Ray has 2 CPUs; two workers of one CPU leave none for the input
    pipeline, which would wait forever: the stage refuses before reading any data."""
    root = copy_repo(tmp_path)  # no shards: the check comes first
    command = [
        *STAGE,
        "profile=ci",
        "pretrain_base.num_workers=2",
        "pretrain_base.cpus_per_worker=1",
    ]
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=root, env=stage_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert time.monotonic() - started < 120
    for setting in ("ray.num_cpus", "pretrain_base.num_workers", "pretrain_base.cpus_per_worker"):
        assert setting in done.stderr, done.stderr[-3000:]
    assert "needs 4 CPUs" in done.stderr and "wait forever" in done.stderr
