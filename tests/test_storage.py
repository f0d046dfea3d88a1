"""Tests of the on-disk index format (ragcore.io.storage)."""

import json
import os
import zlib

import numpy as np
import pytest

from ragcore.io import storage
from ragcore.io.storage import (FORMAT, FORMAT_VERSION, decode_strings, encode_strings, load_index,
                             save_index)

DTYPES = ["?", "i1", "u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8", "<c8", "<c16"]
SHAPES = [(), (0,), (1,), (7,), (97,), (3, 5), (2, 0, 3), (2, 3, 4)]


def _random(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        a = rng.random(shape) < 0.5
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    elif dtype.kind == "c":
        a = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    else:
        a = rng.standard_normal(shape)
    return np.asarray(a).astype(dtype)


def _leftovers(parent, keep):
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_dtypes_and_shapes(tmp_path, dtype, mmap):
    arrays = {f"a{i}": _random(dtype, shape, seed=i) for i, shape in enumerate(SHAPES)}
    save_index(tmp_path / "idx", "x", {"k1": 1.5}, arrays)
    manifest, loaded = load_index(tmp_path / "idx", kind="x", mmap=mmap)
    assert list(loaded) == list(arrays)
    for name, a in arrays.items():
        b = loaded[name]
        assert b.dtype == a.dtype and b.shape == a.shape
        np.testing.assert_array_equal(b, a)
        if mmap and a.size:
            assert isinstance(b, np.memmap)
        if mmap:
            assert not b.flags.writeable


def test_manifest_and_raw_files(tmp_path):
    a = np.arange(12, dtype=np.uint32).reshape(3, 4)
    meta = {"k1": 1.2, "method": "lucene", "n_docs": 3, "nested": {"x": [1, 2]}}
    save_index(tmp_path / "idx", "x", meta, {"tf": a})
    m = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert m["format"] == FORMAT and m["format_version"] == FORMAT_VERSION
    assert m["kind"] == "x" and m["meta"] == meta and "created" in m and "ragcore_version" in m
    assert m["files"] == {"tf": {"file": "tf.bin", "dtype": "<u4", "shape": [3, 4], "bytes": 48,
                                 "crc32": zlib.crc32(a.tobytes())}}
    # headerless: the raw file is exactly the little-endian C-order bytes
    assert (tmp_path / "idx" / "tf.bin").read_bytes() == a.astype("<u4").tobytes()
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["manifest.json", "tf.bin"]


def test_big_endian_and_non_contiguous_are_normalised(tmp_path):
    big = np.arange(10, dtype=">u4")
    strided = np.arange(40, dtype=np.float64).reshape(5, 8)[::2, 1::3].T
    save_index(tmp_path / "idx", "x", {}, {"big": big, "strided": strided})
    m, arrays = load_index(tmp_path / "idx")
    assert m["files"]["big"]["dtype"] == "<u4" and m["files"]["strided"]["dtype"] == "<f8"
    assert (tmp_path / "idx" / "big.bin").read_bytes() == np.arange(10, dtype="<u4").tobytes()
    np.testing.assert_array_equal(arrays["big"], big)
    np.testing.assert_array_equal(arrays["strided"], strided)
    assert (tmp_path / "idx" / "strided.bin").read_bytes() == np.ascontiguousarray(strided).tobytes()


@pytest.mark.parametrize("name", ["", "1a", "a-b", "a.b", "../x", "a/b", "é", "x" * 129, 3])
def test_bad_array_names(tmp_path, name):
    with pytest.raises(ValueError, match="identifier"):
        save_index(tmp_path / "idx", "x", {}, {name: np.zeros(1)})
    assert not (tmp_path / "idx").exists()


def test_names_differing_only_in_case(tmp_path):
    with pytest.raises(ValueError, match="case"):
        save_index(tmp_path / "idx", "x", {}, {"ids": np.zeros(1), "IDS": np.zeros(1)})


@pytest.mark.parametrize("array", [np.array(["a", "b"]), np.array([object()], dtype=object),
                                   np.zeros(2, dtype="i4,f8"), np.array(["2020-01-01"], "M8[D]"),
                                   [1, 2, 3]])
def test_bad_array_types(tmp_path, array):
    with pytest.raises(TypeError):
        save_index(tmp_path / "idx", "x", {}, {"a": array})
    assert list(tmp_path.iterdir()) == []


def test_bad_meta_and_kind(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        save_index(tmp_path / "idx", "x", {"a": object()}, {})
    with pytest.raises(ValueError, match="NaN"):
        save_index(tmp_path / "idx", "x", {"a": float("nan")}, {})
    with pytest.raises(TypeError):
        save_index(tmp_path / "idx", 3, {}, {})
    with pytest.raises(ValueError):
        save_index(tmp_path / "idx", "", {}, {})
    assert list(tmp_path.iterdir()) == []


def test_creates_parent_directories(tmp_path):
    save_index(tmp_path / "a" / "b" / "idx", "x", {}, {"v": np.ones(3)})
    assert load_index(tmp_path / "a" / "b" / "idx")[1]["v"].tolist() == [1.0, 1.0, 1.0]


def test_overwrite_existing_index(tmp_path):
    path = tmp_path / "idx"
    save_index(path, "x", {"v": 1}, {"old": np.arange(5), "shared": np.arange(3)})
    save_index(str(path), "y", {"v": 2}, {"shared": np.arange(4, dtype=np.int16)})
    m, arrays = load_index(path)
    assert m["kind"] == "y" and m["meta"] == {"v": 2} and list(arrays) == ["shared"]
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "shared.bin"]
    assert _leftovers(tmp_path, {"idx"}) == []


def test_overwrite_empty_directory(tmp_path):
    (tmp_path / "idx").mkdir()
    save_index(tmp_path / "idx", "x", {}, {"v": np.arange(2)})
    assert load_index(tmp_path / "idx")[1]["v"].tolist() == [0, 1]


def test_refuses_to_overwrite_unrelated_directory_or_file(tmp_path):
    user = tmp_path / "mydir"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="refusing"):
        save_index(user, "x", {}, {"v": np.arange(2)})
    assert (user / "thesis.tex").read_text() == "precious"
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="refusing"):
        save_index(tmp_path / "foreign", "x", {}, {})
    (tmp_path / "file").write_text("data")
    with pytest.raises(ValueError, match="refusing"):
        save_index(tmp_path / "file", "x", {}, {})
    assert (tmp_path / "file").read_text() == "data"
    assert _leftovers(tmp_path, {"mydir", "foreign", "file"}) == []


def test_failure_while_writing_keeps_old_index(tmp_path, monkeypatch):
    path = tmp_path / "idx"
    save_index(path, "x", {"v": 1}, {"a": np.arange(5)})
    calls = []

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError("disk full")

    monkeypatch.setattr(storage.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_index(path, "x", {"v": 2}, {"a": np.arange(7), "b": np.arange(3)})
    monkeypatch.undo()
    m, arrays = load_index(path)
    assert m["meta"] == {"v": 1} and arrays["a"].tolist() == list(range(5))
    assert _leftovers(tmp_path, {"idx"}) == []


def test_failure_at_rename_restores_old_index(tmp_path, monkeypatch):
    path = tmp_path / "idx"
    save_index(path, "x", {"v": 1}, {"a": np.arange(5)})
    real_rename = os.rename

    def failing_rename(src, dst):
        if os.path.basename(src).startswith(".idx.tmp-"):
            raise OSError("rename failed")
        return real_rename(src, dst)

    monkeypatch.setattr(storage.os, "rename", failing_rename)
    monkeypatch.setattr(storage._dirswap, "_renameat2", None)   # the two-step swap (renames)
    with pytest.raises(OSError, match="rename failed"):
        save_index(path, "x", {"v": 2}, {"a": np.arange(7)})
    monkeypatch.undo()
    assert load_index(path)[0]["meta"] == {"v": 1}
    assert _leftovers(tmp_path, {"idx"}) == []


def test_interrupt_while_writing_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(storage.zlib, "crc32", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_index(tmp_path / "idx", "x", {}, {"a": np.arange(3)})
    assert list(tmp_path.iterdir()) == []


# ---- load errors ----------------------------------------------------------------------------


@pytest.fixture
def index(tmp_path):
    path = tmp_path / "idx"
    save_index(path, "x", {}, {"a": np.arange(100, dtype=np.int64), "e": np.zeros(0, np.float32)})
    return path


def _edit_manifest(path, fn, seal=True):
    """Edit a manifest on purpose; ``seal``: recompute its checksum (else the checksum catches it)."""
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(storage.seal_manifest(m) if seal else m))


def test_not_an_index(tmp_path):
    with pytest.raises(ValueError, match="not a ragcore index: it does not exist"):
        load_index(tmp_path / "missing")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        load_index(tmp_path / "f")
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="not a ragcore index: file manifest.json is missing"):
        load_index(tmp_path / "d")


def test_foreign_manifest(index):
    (index / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_index(index)
    (index / "manifest.json").write_text('{"format": "faiss"}')
    with pytest.raises(ValueError, match="format 'faiss', expected 'ragcore-index'"):
        load_index(index)
    (index / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a ragcore index"):
        load_index(index)


def test_newer_version(index):
    _edit_manifest(index, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ValueError, match=f"format version {FORMAT_VERSION + 1}.*upgrade"):
        load_index(index)


def test_wrong_kind(index):
    with pytest.raises(ValueError, match="is a 'x' index, expected 'tfidf'"):
        load_index(index, kind="tfidf")


def test_missing_file(index):
    (index / "a.bin").unlink()
    with pytest.raises(ValueError, match="a.bin is missing"):
        load_index(index)


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("verify", [True, False])
def test_truncated_and_padded(index, mmap, verify):
    raw = (index / "a.bin").read_bytes()
    (index / "a.bin").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match=r"truncated \(797 bytes, expected 800\)"):
        load_index(index, mmap=mmap, verify=verify)
    (index / "a.bin").write_bytes(raw + b"\0")
    with pytest.raises(ValueError, match=r"padded \(801 bytes, expected 800\)"):
        load_index(index, mmap=mmap, verify=verify)
    (index / "e.bin").write_bytes(b"\0" * 4)
    (index / "a.bin").write_bytes(raw)
    with pytest.raises(ValueError, match=r"e.bin is padded \(4 bytes, expected 0\)"):
        load_index(index, mmap=mmap, verify=verify)


@pytest.mark.parametrize("mmap", [True, False])
def test_corrupt_byte(index, mmap):
    raw = bytearray((index / "a.bin").read_bytes())
    raw[123] ^= 0x01
    (index / "a.bin").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="a.bin has CRC-32"):
        load_index(index, mmap=mmap)
    _, arrays = load_index(index, mmap=mmap, verify=False)  # sizes still fine: loads without verify
    assert arrays["a"].shape == (100,)


def test_crc_streams_in_chunks(index, monkeypatch):
    monkeypatch.setattr(storage, "_CHUNK", 7)
    load_index(index, mmap=True)
    load_index(index, mmap=False)


@pytest.mark.parametrize("edit, match", [
    (lambda e: e.update(shape=[99]), "inconsistent"),
    (lambda e: e.update(dtype="<i4"), "inconsistent"),
    (lambda e: e.update(dtype="|O"), "not a little-endian numeric dtype"),
    (lambda e: e.update(dtype=">i8"), "not a little-endian numeric dtype"),
    (lambda e: e.update(dtype="bogus"), "unknown dtype"),
    (lambda e: e.update(shape=[-100]), "non-negative"),
    (lambda e: e.update(file="../../etc/passwd"), "expected 'a.bin'"),
    (lambda e: e.update(bytes="800"), "not an integer"),
])
def test_inconsistent_manifest_entries(index, edit, match):
    _edit_manifest(index, lambda m: edit(m["files"]["a"]))
    with pytest.raises(ValueError, match=match):
        load_index(index)


def test_error_messages_name_the_path(index):
    (index / "a.bin").write_bytes(b"")
    with pytest.raises(ValueError) as info:
        load_index(index)
    assert str(index) in str(info.value)


# ---- strings --------------------------------------------------------------------------------


@pytest.mark.parametrize("strings", [[], [""], ["a", "", "héllo", "日本語", "🙂", "\ud800x", "tab\there"],
                                     [str(i) for i in range(1000)]])
def test_string_round_trip(tmp_path, strings):
    data, offsets = encode_strings(strings)
    assert data.dtype == np.uint8 and offsets.dtype == np.int64 and offsets.shape == (len(strings) + 1,)
    assert offsets[0] == 0 and offsets[-1] == data.size
    assert decode_strings(data, offsets) == strings
    save_index(tmp_path / "idx", "x", {}, {"s": data, "o": offsets})
    _, arrays = load_index(tmp_path / "idx")
    assert decode_strings(arrays["s"], arrays["o"]) == strings


def test_encode_strings_errors():
    with pytest.raises(TypeError, match=r"strings\[1\] must be a str, got int"):
        encode_strings(["a", 1])
    assert decode_strings(*encode_strings(iter(["x", "y"]))) == ["x", "y"]


def test_decode_strings_errors():
    data, offsets = encode_strings(["ab", "c"])
    with pytest.raises(TypeError):
        decode_strings(data.astype(np.int32), offsets)
    with pytest.raises(TypeError):
        decode_strings(data, offsets.astype(np.float64))
    with pytest.raises(ValueError):
        decode_strings(data, np.array([0, 2, 1, 3]))
    with pytest.raises(ValueError):
        decode_strings(data, np.array([0, 2]))
    with pytest.raises(ValueError):
        decode_strings(data, np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="string 0 is not valid UTF-8"):
        decode_strings(np.array([0xff], np.uint8), np.array([0, 1]))


def test_finish_export_moves_replaces_and_refuses(tmp_path):
    from ragcore.io.model_folder import finish_export

    def ours(p):
        return (p / "kind.txt").is_file()

    def folder(name, text):
        d = tmp_path / name
        d.mkdir()
        (d / "kind.txt").write_text(text)
        return d

    out = tmp_path / "model"
    finish_export(folder("t1", "v1"), out, cached=False, is_ours=ours, what="a model folder")
    assert (out / "kind.txt").read_text() == "v1" and not (tmp_path / "t1").exists()
    # an existing folder of the same kind is replaced (not cached) or kept (cached: a concurrent export)
    finish_export(folder("t2", "v2"), out, cached=False, is_ours=ours, what="a model folder")
    assert (out / "kind.txt").read_text() == "v2"
    finish_export(folder("t3", "v3"), out, cached=True, is_ours=ours, what="a model folder")
    assert (out / "kind.txt").read_text() == "v2" and not (tmp_path / "t3").exists()
    # anything else is never overwritten
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a model folder .*refusing to overwrite"):
        finish_export(folder("t4", "v4"), precious, cached=False, is_ours=ours, what="a model folder")
    assert (precious / "notes.txt").read_text() == "keep me" and not (precious / "kind.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
