"""The deterministic tar writer (no Ray)."""

import io
import tarfile

import pytest

from pipeline.data.shard_writer import ShardSample, SplitWriter, check_key, write_shard
from pipeline.io import sha256_file


def _sample(key: str, n: int = 0) -> ShardSample:
    return ShardSample(key, b"base%d" % n, b"hires%d" % n, f"caption {n}", {"b": 1, "a": [n]})


def test_same_samples_give_identical_bytes_whatever_the_order(tmp_path):
    samples = [_sample(f"train-{i:09d}", i) for i in range(5)]
    one = write_shard(tmp_path / "a" / "shard-000000.tar", samples)
    two = write_shard(tmp_path / "b" / "shard-000000.tar", list(reversed(samples)))
    assert one.path.read_bytes() == two.path.read_bytes()
    assert one.sha256 == two.sha256 == sha256_file(one.path)
    assert one.num_samples == 5 and one.size_bytes == one.path.stat().st_size


def test_members_and_headers_are_fixed(tmp_path):
    info = write_shard(
        tmp_path / "s.tar", [_sample("val-000000002", 2), _sample("val-000000001", 1)]
    )
    with tarfile.open(info.path) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [
            f"val-00000000{i}.{ext}"
            for i in (1, 2)
            for ext in ("base.png", "hires.png", "json", "txt")
        ]
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)
            assert m.isreg()
        assert tar.extractfile("val-000000001.json").read() == b'{"a":[1],"b":1}'
        assert tar.extractfile("val-000000002.txt").read() == b"caption 2"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("key", ["a.b", "../x", "", "a/b", "x" * 81, "é"])
def test_unsafe_keys_are_rejected(key):
    with pytest.raises(ValueError, match="invalid sample key"):
        check_key(key)


def test_duplicate_keys_are_rejected_and_nothing_is_left(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        write_shard(tmp_path / "s.tar", [_sample("k"), _sample("k")])
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_shard(tmp_path):
    class Boom(ShardSample):
        def members(self):
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_shard(tmp_path / "s.tar", [_sample("a"), Boom("b", b"", b"", "")])
    assert list(tmp_path.iterdir()) == []


def test_split_writer_cuts_shards_in_arrival_order(tmp_path):
    writer = SplitWriter(tmp_path, samples_per_shard=2)
    for i in range(5):
        writer.add(_sample(f"train-{i:09d}", i))
    writer.flush()
    assert [s.path.name for s in writer.shards] == [
        "shard-000000.tar",
        "shard-000001.tar",
        "shard-000002.tar",
    ]
    assert [s.num_samples for s in writer.shards] == [2, 2, 1]
    assert writer.num_samples == 5


def test_hand_written_headers_match_tarfile_ustar(tmp_path):
    samples = [_sample(f"train-{i:09d}", i) for i in range(3)]
    ours = write_shard(tmp_path / "ours.tar", samples)
    reference = tmp_path / "reference.tar"
    with tarfile.open(reference, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            for name, data in sample.members():
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
    assert ours.path.read_bytes() == reference.read_bytes()
