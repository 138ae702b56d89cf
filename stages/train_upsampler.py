"""DVC stage `train_upsampler`: the text-conditional super-resolution model (GLIDE Sec. 4,
64->256 at released scale) on random aligned crops of the shards' image pairs -> models/upsampler.pt.
Needs only data/shards, so DVC can run it beside the base chain."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.training.diffusion_stage import stage_main


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main("train_upsampler", "upsample_model", argv)


if __name__ == "__main__":
    raise SystemExit(main())
