"""Reading shards back: damage is reported with the shard and member, or skipped and counted."""

import io
import shutil
import tarfile

import pytest

from pipeline.data.manifest import MANIFEST_NAME, ManifestError, read_manifest
from pipeline.data.shard_reader import CorruptionCounter, CorruptShardError, iter_shard_samples
from pipeline.data.sharding import build_shards
from tests.data.helpers import add_member, config


@pytest.fixture(scope="module")
def built(tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("reader") / "shards"
    build_shards(config(out, "shard.num_samples=24", "shard.samples_per_shard=8"))
    return out


@pytest.fixture
def shards(built, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(built, copy)
    return copy


def _first_train_shard(root):
    entry = read_manifest(root)["splits"]["train"]["shards"][0]
    return root / entry["path"], entry


def test_intact_shard_reads_fully(shards):
    path, entry = _first_train_shard(shards)
    samples = list(iter_shard_samples(path, expected_samples=entry["num_samples"]))
    assert len(samples) == entry["num_samples"] == 8
    assert [s["key"] for s in samples] == sorted(s["key"] for s in samples)


def test_truncated_shard_names_shard_and_member(shards):
    path, entry = _first_train_shard(shards)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(CorruptShardError) as err:
        list(iter_shard_samples(path, expected_samples=8))
    assert str(path) in str(err.value) and err.value.member.startswith("train-")
    with pytest.raises(ManifestError, match="shard-000000.tar"):
        read_manifest(shards)

    counter = CorruptionCounter()
    samples = list(iter_shard_samples(path, skip_corrupt=True, counter=counter, expected_samples=8))
    assert 0 < len(samples) < 8
    assert len(samples) + counter.count == 8
    assert counter.events[0][0] == str(path)


def test_truncated_on_a_member_boundary_needs_the_count(shards):
    path, _ = _first_train_shard(shards)
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    cut = members[8].offset  # header of the 3rd sample's first member: a clean boundary
    path.write_bytes(path.read_bytes()[:cut])
    assert len(list(iter_shard_samples(path))) == 2  # tar alone cannot tell
    with pytest.raises(CorruptShardError, match="manifest lists 8"):
        list(iter_shard_samples(path, expected_samples=8))


def _replace_member(path, member_name, data):
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, content in members:
            content = data if member.name == member_name else content
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))


def test_garbage_png_member_names_the_member(shards):
    path, _ = _first_train_shard(shards)
    with tarfile.open(path) as tar:
        victim = tar.getmembers()[4].name  # the 2nd sample's base PNG
    assert victim.endswith(".base.png")
    _replace_member(path, victim, b"\x89PNG garbage, not an image")
    with pytest.raises(ManifestError, match="shard-000000.tar"):
        read_manifest(shards)
    with pytest.raises(CorruptShardError, match="undecodable PNG") as err:
        list(iter_shard_samples(path))
    assert err.value.member == victim and err.value.shard == str(path)
    assert victim in str(err.value) and str(path) in str(err.value)

    counter = CorruptionCounter()
    samples = list(iter_shard_samples(path, skip_corrupt=True, counter=counter, expected_samples=8))
    assert len(samples) == 7 and counter.count == 1
    assert victim.split(".")[0] not in [s["key"] for s in samples]
    # only the images asked for are decoded: the hires PNG is intact
    assert len(list(iter_shard_samples(path, images=("hires",)))) == 8


def test_same_size_corruption_is_caught_by_sha256_only_when_asked(shards):
    path, _ = _first_train_shard(shards)
    data = bytearray(path.read_bytes())
    with tarfile.open(path) as tar:
        member = tar.getmembers()[0]
    start = member.offset_data + 40  # inside the first PNG's compressed data
    data[start : start + 16] = b"\x00" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="sha256 mismatch"):
        read_manifest(shards)
    assert read_manifest(shards, verify_sha256=False)["written"] == 24


def test_unsafe_member_in_a_shard_is_corruption(tmp_path):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        add_member(tar, "../../etc/x.txt", b"hi")
    with pytest.raises(CorruptShardError, match="unsafe member path"):
        list(iter_shard_samples(path))
    counter = CorruptionCounter()
    assert list(iter_shard_samples(path, skip_corrupt=True, counter=counter)) == []
    assert counter.events[0][1] == "../../etc/x.txt"


def test_missing_manifest_or_shard(shards):
    path, _ = _first_train_shard(shards)
    path.unlink()
    with pytest.raises(ManifestError, match="missing"):
        read_manifest(shards)
    (shards / MANIFEST_NAME).unlink()
    with pytest.raises(ManifestError, match="no manifest.json"):
        read_manifest(shards)
