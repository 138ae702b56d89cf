"""DVC stage `train_noised_clip`: the noised CLIP for CLIP guidance (models/noised_clip.pt) and
the evaluation CLIP (models/eval_clip.pt: a clean CLIP trained with its own seed, or a reference
to local OpenAI CLIP weights), both from data/shards; in parallel with the base chain."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.training.clip_stage import clip_stage_main


def main(argv: Sequence[str] | None = None) -> int:
    return clip_stage_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
