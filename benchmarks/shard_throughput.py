"""Throughput of the shard stage on this machine: images/s for the embedded generator and for a
folder import. Prints ONE JSON object on stdout.

    python benchmarks/shard_throughput.py [--profile mini] [--synthetic 2000] [--folder 400]

One Ray start for everything. A small warm-up run (worker start-up, imports) is timed apart, so
the figures are steady-state. The folder holds JPEGs and PNGs of varied sizes (between
``--min-side`` and ``--max-side`` pixels) with .txt captions, created in a temporary folder.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_config  # noqa: E402
from pipeline.data.ray_session import init_ray  # noqa: E402
from pipeline.data.sharding import build_shards  # noqa: E402


def make_folder(root: Path, count: int, min_side: int, max_side: int, seed: int = 0) -> int:
    """``count`` photo-like images (smooth colour fields + noise), 2/3 JPEG, 1/3 PNG."""
    rng = random.Random(seed)
    total = 0
    for i in range(count):
        w, h = rng.randint(min_side, max_side), rng.randint(min_side, max_side)
        if max(w, h) > 2 * min(w, h):
            h = w
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([x / w, y / h, (x + y) / (w + h)], -1) * 255
        noise = np.random.default_rng(i).normal(0, 12, size=(h, w, 3))
        img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
        fmt, ext = ("PNG", "png") if i % 3 == 2 else ("JPEG", "jpg")
        buf = io.BytesIO()
        img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        (root / f"img{i:06d}.{ext}").write_bytes(buf.getvalue())
        (root / f"img{i:06d}.txt").write_text(f"a test picture number {i}", encoding="utf-8")
        total += buf.tell()
    return total


def shard_bytes(manifest: dict) -> int:
    return sum(s["bytes"] for e in manifest["splits"].values() for s in e["shards"])


def timed_build(overrides: list[str]) -> tuple[float, dict]:
    cfg = load_config(overrides=overrides, params_path=None)
    start = time.perf_counter()
    manifest = build_shards(cfg)
    return time.perf_counter() - start, manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--synthetic", type=int, default=2000)
    parser.add_argument("--folder", type=int, default=400)
    parser.add_argument("--min-side", type=int, default=160)
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    common = [f"profile={args.profile}", f"ray.num_cpus={args.num_cpus}"]
    cfg = load_config(overrides=common, params_path=None)
    init_ray(cfg.ray)
    result: dict = {
        "benchmark": "shard_throughput",
        "profile": args.profile,
        "cpu_count": os.cpu_count(),
        "ray_num_cpus": args.num_cpus,
        "resolutions": {
            "base": int(cfg.shard.base_resolution),
            "hires": int(cfg.shard.upsample_resolution),
        },
        "samples_per_shard": int(cfg.shard.samples_per_shard),
        "batch_size": int(cfg.shard.batch_size),
    }
    with tempfile.TemporaryDirectory(prefix="shard-bench-") as tmp:
        tmp_path = Path(tmp)
        warm_s, _ = timed_build(
            [*common, f"shard.output_dir={tmp_path / 'warm'}", "shard.num_samples=64"]
        )
        result["warmup_s"] = round(warm_s, 2)

        seconds, manifest = timed_build(
            [*common, f"shard.output_dir={tmp_path / 'syn'}", f"shard.num_samples={args.synthetic}"]
        )
        result["synthetic"] = {
            "images": manifest["written"],
            "seconds": round(seconds, 2),
            "images_per_s": round(manifest["written"] / seconds, 1),
            "shard_bytes": shard_bytes(manifest),
        }

        folder = tmp_path / "images"
        folder.mkdir()
        start = time.perf_counter()
        bytes_in = make_folder(folder, args.folder, args.min_side, args.max_side)
        create_s = time.perf_counter() - start
        seconds, manifest = timed_build(
            [
                *common,
                f"shard.output_dir={tmp_path / 'folder'}",
                "shard.source=folder",
                f"shard.input_path={folder}",
            ]
        )
        result["folder"] = {
            "images": args.folder,
            "written": manifest["written"],
            "skipped": manifest["skipped"],
            "source_side_px": [args.min_side, args.max_side],
            "formats": "2/3 JPEG q90, 1/3 PNG",
            "input_bytes": bytes_in,
            "seconds": round(seconds, 2),
            "images_per_s": round(args.folder / seconds, 1),
            "input_mb_per_s": round(bytes_in / seconds / 1e6, 2),
            "shard_bytes": shard_bytes(manifest),
            "folder_creation_s": round(create_s, 2),
        }
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
