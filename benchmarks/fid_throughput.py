"""Feature-extraction throughput of the FID Inception-v3 (images/s). Prints one JSON object.

Times the 2048-d feature extraction (resize to 299, normalisation, network) on random uint8
images at each batch size, after a small warm-up batch, and the one-off cost of loading the
weights (hash check + reading the TorchScript archive). The machine's 1-minute load average is
printed too, and the process CPU time per image: on a shared CPU images/s scale with the cores
actually free, CPU seconds per image much less.

    python benchmarks/fid_throughput.py                        # CPU, batches 32 and 64
    python benchmarks/fid_throughput.py --device cuda --batches 32 64 256 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from pipeline.evaluation.inception_weights import load_fid_inception


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--image-size", type=int, default=64, help="input side before resize")
    parser.add_argument("--feature", type=int, default=2048, choices=[64, 192, 768, 2048])
    parser.add_argument("--repeats", type=int, default=2, help="timed batches per batch size")
    args = parser.parse_args()

    start = time.perf_counter()
    net = load_fid_inception(feature=args.feature).to(args.device)
    load_s = time.perf_counter() - start
    gen = torch.Generator().manual_seed(0)
    results = {}
    for batch in args.batches:
        shape = (batch, 3, args.image_size, args.image_size)
        images = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8).to(args.device)
        net(images[:2])  # warm-up (allocator, oneDNN/cuDNN kernel choice)
        _sync(args.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(args.repeats):
            net(images)
        _sync(args.device)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        results[str(batch)] = {
            "images_per_s": round(batch * args.repeats / elapsed, 2),
            "s_per_batch": round(elapsed / args.repeats, 3),
            "process_cpu_s_per_image": round(cpu / (batch * args.repeats), 3),
        }
    print(
        json.dumps(
            {
                "benchmark": "fid_feature_throughput",
                "device": args.device,
                "cpu": platform.processor() or platform.machine(),
                "torch_threads": torch.get_num_threads(),
                "feature": args.feature,
                "input_size": args.image_size,
                "repeats": args.repeats,
                "load_weights_s": round(load_s, 2),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "by_batch": results,
            }
        )
    )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
