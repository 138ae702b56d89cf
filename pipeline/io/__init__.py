"""Low-level file I/O shared by every layer: atomic writes and safe archive paths."""

from pipeline.io.atomic import (
    OutputWriteError,
    atomic_output_path,
    atomic_write_bytes,
    atomic_write_text,
)
from pipeline.io.hashing import sha256_file

__all__ = [
    "OutputWriteError",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_output_path",
    "sha256_file",
]
