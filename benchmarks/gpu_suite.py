"""Every GPU figure of the README's measured table in one process (one import of torch and
Lightning): training steps (gpu_step.py), guided sampling against the naive way
(sample_throughput.py) and sampling latency eager and compiled (sample_latency.py).

Each result is appended as one JSON line to --out as soon as it is measured, so a run stopped
by a time limit keeps what it finished; a measurement that runs out of memory is recorded as
such. The slow compiled runs come last. No Ray, no MLflow.

    python benchmarks/gpu_suite.py --out gpu.jsonl                   # on the GPU machine
    python benchmarks/gpu_suite.py --profile ci --smoke --out x.jsonl   # the plumbing, on a CPU
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_step  # noqa: E402
import sample_latency  # noqa: E402
import sample_throughput  # noqa: E402

# (name, benchmark, arguments, seconds it is expected to take on an H200)
SUITE = [
    ("base_b64", "gpu_step", "--batch 64 --lightning --kernels 15", 45),
    ("nonfinite_on_device", "nonfinite", "ci", 20),
    ("fp32_device_vs_cpu", "fidelity", "", 30),
    ("upsampler_b16", "gpu_step", "--model upsampler --batch 16 --steps 5 --warmup 2", 25),
    ("upsampler_b32", "gpu_step", "--model upsampler --batch 32 --steps 4 --warmup 2", 30),
    (
        "upsampler_b64_checkpoint",
        "gpu_step",
        "--model upsampler --batch 64 --checkpoint --steps 3 --warmup 1",
        40,
    ),
    ("guided_vs_naive_b4", "sample_throughput", "--steps ddim25 --batch 4", 30),
    ("sample_latency_b4", "sample_latency", "--prompts 4 --steps ddim25", 150),
    (
        "sample_latency_b4_bf16",
        "sample_latency",
        "--prompts 4 --steps ddim25 --precision bf16-mixed",
        150,
    ),
    ("base_b256", "gpu_step", "--batch 256 --steps 5 --warmup 2", 30),
    ("base_b64_checkpoint", "gpu_step", "--batch 64 --checkpoint --steps 6", 20),
    ("base_b64_channels_last", "gpu_step", "--batch 64 --channels-last --steps 6", 20),
    ("base_b64_cudnn_benchmark", "gpu_step", "--batch 64 --cudnn-benchmark --steps 6", 25),
    ("base_b64_compiled", "gpu_step", "--batch 64 --compile --steps 6", 200),
]
SMOKE = "--steps 2 --warmup 1"  # appended to gpu_step runs with --smoke


def run_one(benchmark: str, argv: list[str]) -> dict[str, Any]:
    if benchmark == "gpu_step":
        return gpu_step.measure(gpu_step.build_parser().parse_args(argv))
    if benchmark == "fidelity":
        return device_matches_cpu(argv[1])
    if benchmark == "nonfinite":
        return nonfinite_steps_skipped(argv[1])
    if benchmark == "sample_latency":
        return sample_latency.measure(sample_latency.build_parser().parse_args(argv))
    printed = io.StringIO()  # sample_throughput prints its JSON
    saved, sys.argv = sys.argv, ["sample_throughput.py", *argv]
    try:
        with contextlib.redirect_stdout(printed):
            sample_throughput.main()
    finally:
        sys.argv = saved
    return json.loads(printed.getvalue())


@torch.no_grad()
def device_matches_cpu(profile: str) -> dict[str, Any]:
    """The base model's float32 output on the device against the CPU's (same weights, inputs;
    TF32 off): the fused attention kernels compute the same function."""
    from pipeline.config import load_config
    from pipeline.models import create_glide_model
    from pipeline.training.model_setup import glide_model_kwargs

    cfg = load_config([f"profile={profile}"], params_path=None)
    kwargs = glide_model_kwargs(cfg.base_model, gpu_step.VOCAB_SIZE)
    torch.manual_seed(0)
    model = create_glide_model(**kwargs).eval()
    for p in model.parameters():  # zero-initialised output layers would hide the attention
        p.add_(torch.randn_like(p) * 0.02)
    inputs = gpu_step.random_batch(kwargs, 2, int(cfg.shard.base_resolution))
    x = torch.randn(2, 3, kwargs["image_size"], kwargs["image_size"])
    t = torch.tensor([10, 700])
    reference = model(x, t, tokens=inputs["tokens"], mask=inputs["mask"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        model = model.to(device)
        out = model(
            x.to(device),
            t.to(device),
            tokens=inputs["tokens"].to(device),
            mask=inputs["mask"].to(device),
        )
    finally:
        torch.backends.cudnn.allow_tf32 = True  # PyTorch's default again
    error = (out.cpu().double() - reference.double()).norm() / reference.double().norm()
    return {"profile": profile, "device": str(device), "relative_error": float(error)}


def nonfinite_steps_skipped(profile: str) -> dict[str, Any]:
    """The Lightning module on the device, bf16-mixed: NaN steps leave the weights as one good
    step made them (the fused AdamW skips on the device) and the run stops past the limit."""
    import itertools

    import lightning.pytorch as pl
    from omegaconf import OmegaConf

    from pipeline.config import load_config
    from pipeline.training.diffusion_module import GlideDiffusionModule, NonFiniteLossError
    from pipeline.training.model_setup import diffusion_settings, glide_model_kwargs

    cfg = load_config([f"profile={profile}"], params_path=None)
    kwargs = glide_model_kwargs(cfg.base_model, gpu_step.VOCAB_SIZE)
    settings = OmegaConf.to_container(cfg.pretrain_base, resolve=True)
    settings["max_consecutive_nonfinite"] = 3
    good = gpu_step.random_batch(kwargs, 4, 16)
    size = int(kwargs["image_size"])
    bad = {**good, "image": torch.full((4, 3, size, size), float("nan"))}

    def fit(batches, steps):
        pl.seed_everything(0, verbose=False)
        module = GlideDiffusionModule(kwargs, diffusion_settings(cfg.base_model), settings, "x")
        trainer = pl.Trainer(
            max_steps=steps, accelerator="auto", devices=1, precision="bf16-mixed",
            gradient_clip_val=1.0, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        error = None
        try:
            trainer.fit(module, train_dataloaders=batches)
        except NonFiniteLossError as err:
            error = str(err)
        return module, trainer, error

    reference, _, _ = fit(itertools.repeat(good), 1)
    module, trainer, error = fit(itertools.chain([good], itertools.repeat(bad)), 12)
    expected = reference.model.state_dict()
    return {
        "fused": bool(trainer.optimizers[0].defaults["fused"]),
        "stopped_with": error,
        "nonfinite_total": module.nonfinite_total,
        "steps_done": int(module.global_step),
        "weights_equal_after_nan_steps": all(
            torch.equal(v, expected[k]) for k, v in module.model.state_dict().items()
        ),
    }


def arguments(benchmark: str, args_text: str, profile: str, smoke: bool) -> list[str]:
    argv = ["--profile", profile, *shlex.split(args_text)]
    if benchmark == "fidelity":
        return argv
    if benchmark == "nonfinite":
        return ["--profile", args_text]
    if smoke and benchmark == "gpu_step":
        argv += shlex.split(SMOKE) + ["--compile-backend", "aot_eager", "--threads", "2"]
    if smoke and benchmark == "sample_latency":
        argv += ["--steps", "ddim5", "--repeats", "1", "--compile-backend", "aot_eager"]
    if smoke and benchmark == "sample_throughput":
        argv += ["--steps", "ddim5", "--repeats", "1"]
    return argv


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="released")
    parser.add_argument("--out", required=True, help="JSON lines, one per measurement")
    parser.add_argument("--budget-s", type=float, default=540.0, help="skip what would overrun")
    parser.add_argument("--only", nargs="*", default=[], help="names of SUITE to run")
    parser.add_argument("--smoke", action="store_true", help="few steps, aot_eager: a CPU check")
    args = parser.parse_args()
    start = time.perf_counter()
    out = Path(args.out)
    for name, benchmark, args_text, expected_s in SUITE:
        if args.only and name not in args.only:
            continue
        elapsed = time.perf_counter() - start
        if elapsed + expected_s > args.budget_s:
            record = {"name": name, "skipped": f"{elapsed:.0f} s spent of {args.budget_s:.0f}"}
        else:
            record = measure(
                name, benchmark, arguments(benchmark, args_text, args.profile, args.smoke)
            )
        with out.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(json.dumps(record)[:400], flush=True)


def measure(name: str, benchmark: str, argv: list[str]) -> dict[str, Any]:
    began = time.perf_counter()
    try:
        record = {"name": name, **run_one(benchmark, argv)}
    except torch.OutOfMemoryError as err:
        record = {"name": name, "out_of_memory": str(err).splitlines()[0][:200]}
    except Exception as err:  # one failed measurement must not lose the others
        record = {"name": name, "error": repr(err)[:300], "trace": traceback.format_exc()[-1500:]}
    torch._dynamo.reset()
    gpu_step.release_memory(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    record["wall_s"] = round(time.perf_counter() - began, 1)
    return record


if __name__ == "__main__":
    main()
