"""Input enumeration, safe member names and split assignment (no Ray)."""

import tarfile

import pytest

from pipeline.data.sources import (
    NON_REGULAR_MEMBER,
    TRUNCATED_TAR,
    UNREADABLE_TAR,
    UNSAFE_MEMBER,
    SourceError,
    list_folder_inputs,
    list_tar_files,
    list_tar_samples,
)
from pipeline.data.splits import hashed_split, synthetic_split, synthetic_val_count
from pipeline.data.tar_members import is_safe_member_name, split_member_name
from tests.data.helpers import write_tar


def test_folder_listing_is_sorted_recursive_and_case_insensitive(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ["z.JPG", "a.png", "b/c.WebP", "b/d.tiff", "notes.md", ".x.png", ".hidden/e.png"]:
        (tmp_path / name).write_bytes(b"x")
    for name in ["z.txt", "a.TXT", "b/c.txt"]:
        (tmp_path / name).write_text("caption")
    rows = list_folder_inputs(tmp_path)
    assert [r["source"] for r in rows] == ["a.png", "b/c.WebP", "b/d.tiff", "z.JPG"]
    captions = {r["source"]: r["caption_path"] for r in rows}
    assert captions["a.png"].endswith("a.TXT")
    assert captions["b/d.tiff"] == ""  # missing caption: still an input, skipped later
    with pytest.raises(SourceError):
        list_folder_inputs(tmp_path / "nope")


def test_tar_files_from_folder_glob_and_file(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ["b.tar", "a.TAR", "sub/c.tar", "x.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert [r["name"] for r in list_tar_files(str(tmp_path))] == ["a.TAR", "b.tar", "sub/c.tar"]
    assert [r["name"] for r in list_tar_files(f"{tmp_path}/*.tar")] == ["b.tar"]
    assert [r["name"] for r in list_tar_files(f"{tmp_path}/**/*.tar")] == ["b.tar", "sub/c.tar"]
    assert [r["name"] for r in list_tar_files(str(tmp_path / "b.tar"))] == ["b.tar"]
    with pytest.raises(SourceError):
        list_tar_files(str(tmp_path / "missing.tar"))


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("a/b.jpg", True),
        ("000.jpg", True),
        ("../evil.jpg", False),
        ("/etc/passwd", False),
        ("a/../../b.jpg", False),
        ("C:/x.jpg", False),
        ("\\x.jpg", False),
        ("", False),
    ],
)
def test_member_names(name, safe):
    assert is_safe_member_name(name) is safe


def test_member_key_split():
    assert split_member_name("./a/b/0001.base.png") == ("a/b/0001", "base.png")
    assert split_member_name("0001.JPG") == ("0001", "jpg")


def test_tar_listing_flags_unsafe_links_and_truncation(tmp_path):
    path = write_tar(
        tmp_path / "x.tar",
        [
            ("k1.jpg", b"img1"),
            ("k1.txt", b"cap"),
            ("../evil.jpg", b"x"),
            ("k2.jpg", b"", tarfile.SYMTYPE),
            ("k2.txt", b"cap"),
            ("k0.txt", b"only caption"),
            ("k3.jpg", b"y" * 2000),
        ],
    )
    data = path.read_bytes()
    rows = list(list_tar_samples(str(path), "x.tar"))
    by_source = {r["source"]: r for r in rows}
    assert by_source["x.tar:../evil.jpg"]["reason"] == UNSAFE_MEMBER
    assert by_source["x.tar:k2"]["reason"] == NON_REGULAR_MEMBER
    assert "symlink" in by_source["x.tar:k2"]["detail"]
    assert by_source["x.tar:k1"]["reason"] == "" and "jpg" in by_source["x.tar:k1"]["members"]
    assert [r["source"] for r in rows if not r["reason"]] == ["x.tar:k0", "x.tar:k1", "x.tar:k3"]

    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: data.index(b"y" * 2000) + 1000])  # inside k3.jpg's data
    rows = list(list_tar_samples(str(cut), "cut.tar"))
    reasons = {r["source"]: r["reason"] for r in rows}
    assert reasons["cut.tar:k3"] == TRUNCATED_TAR
    assert reasons["cut.tar"] == UNREADABLE_TAR
    assert reasons["cut.tar:k1"] == ""

    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar at all" * 100)
    rows = list(list_tar_samples(str(garbage), "garbage.tar"))
    assert [(r["source"], r["reason"]) for r in rows] == [("garbage.tar", UNREADABLE_TAR)]
    assert "garbage.tar" in rows[0]["detail"]


def test_splits_are_deterministic():
    assert synthetic_val_count(256, 0.125) == 32
    assert synthetic_val_count(10, 0.0) == 0
    assert synthetic_val_count(3, 0.01) == 1
    splits = [synthetic_split(i, 256, 0.125) for i in range(256)]
    assert splits.count("val") == 32 and splits[-1] == "val" and splits[0] == "train"
    hashed = [hashed_split(0, f"img{i}.jpg", 0.25) for i in range(2000)]
    assert hashed == [hashed_split(0, f"img{i}.jpg", 0.25) for i in range(2000)]
    assert 400 < hashed.count("val") < 600
    assert hashed != [hashed_split(1, f"img{i}.jpg", 0.25) for i in range(2000)]
