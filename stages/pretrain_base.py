"""DVC stage `pretrain_base`: text-conditional 64x64 (profile-sized) base model -> models/base.pt."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.training.diffusion_stage import stage_main


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main("pretrain_base", "base_model", argv)


if __name__ == "__main__":
    raise SystemExit(main())
