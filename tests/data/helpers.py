"""Small builders for the data tests: configs, encoded images, img2dataset-style tars."""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.config import load_config


def config(out_dir: Path, *overrides: str):
    """The ci profile with the shard output in ``out_dir`` (schema validation included)."""
    return load_config(
        overrides=["profile=ci", f"shard.output_dir={out_dir}", *overrides], params_path=None
    )


def pattern(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A uint8 RGB test picture: smooth gradients plus a seeded colour offset."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1)
    return ((img + rng.integers(0, 64, size=3)) % 256).astype(np.uint8)


def encode(img: Image.Image | np.ndarray, fmt: str, **save_args) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save_args)
    return buf.getvalue()


def exif_rotated_jpeg(width: int, height: int) -> bytes:
    """A width x height JPEG whose EXIF says 'rotate 90' (orientation 6): upright it is
    height x width."""
    img = Image.fromarray(pattern(width, height, 3))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "JPEG", exif=exif.tobytes())


def sixteen_bit_png(width: int, height: int) -> bytes:
    arr = (np.arange(width * height, dtype=np.uint16).reshape(height, width) * 37).astype(np.uint16)
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    return encode(img, "PNG")


def bomb_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A PNG header declaring width x height pixels (a decompression bomb), with a tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def add_member(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind == tarfile.SYMTYPE:
        info.linkname = "000000000.jpg"
        tar.addfile(info)
        return
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_tar(path: Path, members: list[tuple]) -> Path:
    """members: (name, bytes) or (name, b"", tarfile.SYMTYPE)."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for member in members:
            add_member(tar, *member)
    return path
