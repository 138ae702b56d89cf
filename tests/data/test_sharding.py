"""build_shards end to end on real Ray and real files: synthetic, folder, img2dataset tars."""

import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from pipeline.data import image_prep
from pipeline.data.manifest import MANIFEST_NAME, read_manifest
from pipeline.data.shard_reader import iter_shard_samples
from pipeline.data.sharding import ShardingError, build_shards
from pipeline.data.sources import NON_REGULAR_MEMBER, UNREADABLE_TAR, UNSAFE_MEMBER
from pipeline.io import sha256_file
from tests.data.helpers import (
    bomb_png,
    config,
    encode,
    exif_rotated_jpeg,
    pattern,
    sixteen_bit_png,
    write_tar,
)

pytestmark = pytest.mark.usefixtures("ray_session")

SYNTHETIC = ("shard.num_samples=40", "shard.samples_per_shard=8", "shard.val_fraction=0.2")


def _shard_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.tar"))}


def _check_accounting(manifest, root):
    assert manifest["inputs"] == manifest["written"] + manifest["skipped"]
    assert manifest["skipped"] == len(manifest["skipped_inputs"])
    assert sum(manifest["skip_reasons"].values()) == manifest["skipped"]
    assert sum(manifest["counts"].values()) == manifest["written"]
    listed = set()
    for split, entry in manifest["splits"].items():
        assert entry["num_samples"] == manifest["counts"][split]
        assert sum(s["num_samples"] for s in entry["shards"]) == entry["num_samples"]
        for shard in entry["shards"]:
            path = root / shard["path"]
            listed.add(shard["path"])
            assert sha256_file(path) == shard["sha256"]
            assert path.stat().st_size == shard["bytes"]
            samples = list(iter_shard_samples(path, expected_samples=shard["num_samples"]))
            assert len(samples) == shard["num_samples"]
            assert all(s["key"].startswith(f"{split}-") for s in samples)
    assert set(_shard_files(root)) == listed  # the folder holds exactly the listed shards
    assert read_manifest(root) == manifest


def test_synthetic_is_deterministic_and_accounted(tmp_path):
    cfg_a = config(tmp_path / "a", *SYNTHETIC)
    cfg_b = config(tmp_path / "b", *SYNTHETIC)
    first = build_shards(cfg_a, run_id="run-1")
    second = build_shards(cfg_b, run_id="run-2")
    assert _shard_files(tmp_path / "a") == _shard_files(tmp_path / "b")
    assert first.pop("run_id") == "run-1" and second.pop("run_id") == "run-2"
    assert first == second
    assert first["counts"] == {"train": 32, "val": 8}
    assert [s["num_samples"] for s in first["splits"]["train"]["shards"]] == [8, 8, 8, 8]
    assert first["resolutions"] == {"base": 16, "hires": 64} and first["source"] == "synthetic"
    _check_accounting(json.loads((tmp_path / "a" / MANIFEST_NAME).read_text()), tmp_path / "a")

    sample = next(
        iter_shard_samples(
            tmp_path / "a/val/shard-000000.tar", images=("base", "hires"), with_meta=True
        )
    )
    assert sample["key"] == "val-000000032"
    assert sample["base"].shape == (16, 16, 3) and sample["hires"].shape == (64, 64, 3)
    assert sample["meta"]["caption"] == sample["caption"] and sample["meta"]["attributes"]
    assert sample["meta"]["source"] == "synthetic:32"


def test_stale_shards_are_removed(tmp_path):
    out = tmp_path / "shards"
    build_shards(config(out, "shard.num_samples=40", "shard.samples_per_shard=4"))
    assert len(list((out / "train").glob("*.tar"))) == 9
    (out / "train" / ".shard-000003.tar.abc.tmp").write_bytes(b"leftover of a killed run")
    (out / "val" / "shard-000042.tar").write_bytes(b"stale")
    (out / "notes.txt").write_text("not ours: kept")
    manifest = build_shards(config(out, "shard.num_samples=40", "shard.samples_per_shard=16"))
    assert sorted(p.name for p in (out / "train").iterdir()) == [
        "shard-000000.tar",
        "shard-000001.tar",
        "shard-000002.tar",
    ]
    assert sorted(p.name for p in (out / "val").iterdir()) == ["shard-000000.tar"]
    assert (out / "notes.txt").exists()
    _check_accounting(manifest, out)


# ------------------------------------------------------------------------------------ folder

GOOD = {
    "rgb.jpg": lambda: encode(pattern(48, 40, 1), "JPEG"),
    "rgba.png": lambda: encode(Image.fromarray(pattern(40, 40, 2)).convert("RGBA"), "PNG"),
    "palette.PNG": lambda: encode(Image.fromarray(pattern(32, 32, 4)).convert("P"), "PNG"),
    "gray.png": lambda: encode(Image.fromarray(pattern(32, 32, 5)).convert("L"), "PNG"),
    "deep.png": lambda: sixteen_bit_png(40, 32),
    "rotated.jpg": lambda: exif_rotated_jpeg(64, 32),
    "photo.webp": lambda: encode(pattern(50, 36, 6), "WEBP"),
    "sub/scan.tif": lambda: encode(pattern(36, 36, 7), "TIFF"),
    "sub/old.BMP": lambda: encode(pattern(30, 30, 8), "BMP"),
    "sub/anim.gif": lambda: encode(pattern(30, 30, 9), "GIF"),
}
BAD = {  # name: (image bytes, caption bytes or None, expected reason)
    "corrupt.jpg": (
        lambda: b"\xff\xd8\xff\xe0 definitely not a jpeg" * 10,
        b"a cat",
        image_prep.CORRUPT,
    ),
    "truncated.png": (
        lambda: (lambda b: b[: len(b) // 2])(encode(pattern(64, 64, 10), "PNG")),
        b"a dog",
        image_prep.TRUNCATED,
    ),
    "empty_caption.png": (
        lambda: encode(pattern(32, 32, 11), "PNG"),
        b"  \n\t ",
        image_prep.EMPTY_CAPTION,
    ),
    "no_caption.png": (
        lambda: encode(pattern(32, 32, 12), "PNG"),
        None,
        image_prep.MISSING_CAPTION,
    ),
    "latin1.png": (
        lambda: encode(pattern(32, 32, 13), "PNG"),
        b"caf\xe9 \xff",
        image_prep.UNDECODABLE_CAPTION,
    ),
    "zero.jpg": (lambda: b"", b"nothing", image_prep.ZERO_BYTE),
    "bomb.png": (bomb_png, b"a bomb", image_prep.BOMB),
    "tiny.png": (lambda: encode(pattern(8, 8, 14), "PNG"), b"too small", image_prep.TOO_SMALL),
    "wide.png": (lambda: encode(pattern(96, 16, 15), "PNG"), b"a banner", image_prep.ASPECT),
}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    for name, make in GOOD.items():
        (root / name).write_bytes(make())
        (root / name).with_suffix(".txt").write_text(f"caption of {name}", encoding="utf-8")
    for name, (make, caption, _) in BAD.items():
        (root / name).write_bytes(make())
        if caption is not None:
            (root / name).with_suffix(".txt").write_bytes(caption)
    (root / "orphan.txt").write_text("a caption without image: not an input")
    return root


def test_folder_import_skips_and_lists_every_bad_input(image_folder, tmp_path):
    out = tmp_path / "shards"
    manifest = build_shards(
        config(
            out,
            "shard.source=folder",
            f"shard.input_path={image_folder}",
            "shard.max_skipped_fraction=0.5",
            "shard.val_fraction=0.2",
        )
    )
    assert manifest["inputs"] == len(GOOD) + len(BAD)
    assert manifest["written"] == len(GOOD)
    reasons = {s["source"]: s["reason"] for s in manifest["skipped_inputs"]}
    assert reasons == {name: reason for name, (_, _, reason) in BAD.items()}
    assert manifest["skip_reasons"] == {reason: 1 for _, _, reason in BAD.values()}
    _check_accounting(manifest, out)

    samples = {}
    for entry in manifest["splits"].values():
        for shard in entry["shards"]:
            for s in iter_shard_samples(
                out / shard["path"], images=("base", "hires"), with_meta=True
            ):
                samples[s["meta"]["source"]] = s
    assert set(samples) == set(GOOD)
    for name, s in samples.items():
        assert s["caption"] == f"caption of {name}"
        assert s["base"].shape == (16, 16, 3) and s["hires"].shape == (64, 64, 3)
        assert s["base"].dtype == np.uint8
    assert samples["rotated.jpg"]["meta"]["source_size"] == [32, 64]  # EXIF applied: upright
    assert samples["rgba.png"]["meta"]["source_size"] == [40, 40]


def test_too_many_skips_fail_with_the_reasons(image_folder, tmp_path):
    out = tmp_path / "shards"
    with pytest.raises(
        ShardingError, match=r"skipped \d+ of 19 inputs.*max_skipped_fraction"
    ) as err:
        build_shards(
            config(
                out,
                "shard.source=folder",
                f"shard.input_path={image_folder}",
                "shard.max_skipped_fraction=0.2",
            )
        )
    assert "corrupt image" in str(err.value) or "missing caption" in str(err.value)
    assert not (out / MANIFEST_NAME).exists()


# ------------------------------------------------------------------------------ img2dataset


@pytest.fixture(scope="module")
def img2dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("img2dataset")
    meta = lambda i: json.dumps({"url": f"http://example.com/{i}.jpg", "key": f"{i:09d}"}).encode()  # noqa: E731
    write_tar(
        root / "00000.tar",
        [
            ("000000000.jpg", encode(pattern(64, 48, 20), "JPEG")),
            ("000000000.txt", b"a red square"),
            ("000000000.json", meta(0)),
            ("000000001.png", encode(pattern(40, 40, 21), "PNG")),
            ("000000001.txt", b"a blue circle"),
            ("000000002.jpg", encode(pattern(40, 40, 22), "JPEG")),  # no caption
            ("000000002.json", meta(2)),
            ("000000003.jpg", encode(pattern(10, 10, 23), "JPEG")),  # too small
            ("000000003.txt", b"tiny"),
            ("000000004.jpg", encode(pattern(120, 30, 24), "JPEG")),  # aspect 4
            ("000000004.txt", b"a banner"),
            ("../evil.jpg", encode(pattern(32, 32, 25), "JPEG")),
            ("000000005.jpg", b"", tarfile.SYMTYPE),
            ("000000006.webp", encode(pattern(36, 36, 26), "WEBP")),
            ("000000006.txt", b"a green star"),
        ],
    )
    good = write_tar(
        root / "00001.tar",
        [
            ("000000100.jpg", encode(pattern(40, 40, 30), "JPEG")),
            ("000000100.txt", b"first of a damaged tar"),
            ("000000101.jpg", encode(pattern(40, 40, 31), "JPEG")),
            ("000000101.txt", b"second of a damaged tar"),
        ],
    )
    data = good.read_bytes()
    good.write_bytes(data[: data.index(b"second of a damaged tar") - 700])  # inside 101.jpg
    return root


def test_img2dataset_import_with_filters_and_unsafe_members(img2dataset_dir, tmp_path):
    out = tmp_path / "shards"
    manifest = build_shards(
        config(
            out,
            "shard.source=webdataset",
            f"shard.input_path={img2dataset_dir}",
            "shard.max_skipped_fraction=0.9",
            "shard.val_fraction=0.0",
        )
    )
    reasons = {s["source"]: s["reason"] for s in manifest["skipped_inputs"]}
    assert reasons == {
        "00000.tar:../evil.jpg": UNSAFE_MEMBER,
        "00000.tar:000000002": image_prep.MISSING_CAPTION,
        "00000.tar:000000003": image_prep.TOO_SMALL,
        "00000.tar:000000004": image_prep.ASPECT,
        "00000.tar:000000005": NON_REGULAR_MEMBER,
        "00001.tar:000000101": "truncated tar member",
        "00001.tar": UNREADABLE_TAR,
    }
    details = {s["source"]: s["detail"] for s in manifest["skipped_inputs"]}
    assert "00001.tar" in details["00001.tar"]
    assert manifest["written"] == 4 and manifest["counts"] == {"train": 4, "val": 0}
    _check_accounting(manifest, out)
    [shard] = manifest["splits"]["train"]["shards"]
    samples = list(iter_shard_samples(out / shard["path"], with_meta=True))
    assert [s["caption"] for s in samples] == [
        "a red square",
        "a blue circle",
        "a green star",
        "first of a damaged tar",
    ]
    assert samples[0]["meta"]["source_meta"]["url"] == "http://example.com/0.jpg"
    assert [s["key"] for s in samples] == [
        f"train-{i:09d}" for i in (1, 2, 7, 8)
    ]  # unsafe member first


# ------------------------------------------------------------------------------ blank images


@pytest.fixture(scope="module")
def clip_art_folder(tmp_path_factory):
    """Clip art as users have it: two pictures and two fully transparent PNGs."""
    root = tmp_path_factory.mktemp("clip_art")
    clear = Image.new("RGBA", (40, 40), (10, 200, 10, 0))
    images = {
        "drawn.png": encode(Image.fromarray(pattern(40, 40, 40)).convert("RGBA"), "PNG"),
        "photo.jpg": encode(pattern(48, 40, 41), "JPEG"),
        "clear_1.png": encode(clear, "PNG"),
        "clear_2.png": encode(clear.resize((64, 48)), "PNG"),
    }
    for name, data in images.items():
        (root / name).write_bytes(data)
        (root / name).with_suffix(".txt").write_text(f"caption of {name}")
    return root


def test_blank_images_are_kept_and_listed_or_skipped(clip_art_folder, tmp_path):
    folder = ("shard.source=folder", f"shard.input_path={clip_art_folder}")
    kept = build_shards(config(tmp_path / "kept", *folder, "shard.max_skipped_fraction=0.6"))
    assert kept["written"] == 4 and kept["skipped"] == 0
    assert kept["blank_images"] == 2
    assert [b["source"] for b in kept["blank_inputs"]] == ["clear_1.png", "clear_2.png"]

    skipped = build_shards(
        config(
            tmp_path / "skipped",
            *folder,
            "shard.max_skipped_fraction=0.6",
            "shard.skip_blank_images=true",
        )
    )
    assert skipped["written"] == 2 and skipped["blank_images"] == 0
    assert skipped["skip_reasons"] == {image_prep.BLANK: 2}
    reasons = {s["source"]: s["reason"] for s in skipped["skipped_inputs"]}
    assert reasons == {"clear_1.png": image_prep.BLANK, "clear_2.png": image_prep.BLANK}
    _check_accounting(skipped, tmp_path / "skipped")
