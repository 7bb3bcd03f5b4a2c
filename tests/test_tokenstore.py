"""The token store's formats and readers, and the batches drawn from them: byte-identical to the
sampler at 5c060e6 (tests/fixtures/batches_v1.npz) for every format, reader and rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import assert_bad_input, cli

import plc.data.tokenstore as tokenstore
from plc.data.sampling import BatchSampler, eval_windows
from plc.data.tokenstore import (
    ConcatTokens,
    RawTokens,
    ShardedTokens,
    StoreWriter,
    describe_store,
    merge_parts,
    open_store,
    write_store,
)
from plc.errors import PlcError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from record_batches import EVALS, SAMPLERS, STORES, store_arrays  # noqa: E402

RECORDED = dict(np.load(FIXTURES / "batches_v1.npz"))
LAYOUTS = ["v1-memory", "v1-raw", "v2-memory", "v2-files", "v2-parts"]


def ident(vocab: int) -> dict:
    return {"name": "x", "vocab_size": vocab, "eos_id": 0, "fingerprint": "x"}


def write_v1_store(path: Path, train, val, tokenizer: dict, chunk: int = 1 << 20) -> Path:
    """A store as plc wrote it before format 2 (StoreWriter at 5c060e6): uint32, uncompressed."""
    group = zarr.open_group(path, mode="w")
    for name, tokens in (("train", train), ("val", val)):
        arr = group.create_array(
            name, shape=(0,), dtype="uint32", chunks=(chunk,), compressors=None
        )
        arr.append(np.asarray(tokens, dtype=np.uint32))
    group.attrs.update(
        {
            "format": "plc-token-store", "format_version": 1, "lang": path.stem,
            "tokenizer": tokenizer, "source": "arrays", "train_tokens": len(train),
            "val_tokens": len(val), "train_docs": 1, "val_docs": 1, "plc_version": "0.1.0",
        }
    )  # fmt: skip
    return path


def write_layout(layout: str, path: Path, train, val, tokenizer: dict) -> Path:
    """The same tokens in one of the layouts a reader meets (small chunks: windows cross them)."""
    if layout.startswith("v1"):
        return write_v1_store(path, train, val, tokenizer, chunk=1000)
    if layout == "v2-parts":  # three pieces per split, as `plc shard --parts 3` merges them
        cuts = [0, len(train) // 3, len(train) // 2, len(train)]
        vcuts = [0, 0, len(val) // 4, len(val)]  # an empty first val piece
        parts = []
        for i in range(3):
            parts.append(
                write_store(
                    path.with_name(f"{path.stem}-{i}.zarr"), train[cuts[i] : cuts[i + 1]],
                    val[vcuts[i] : vcuts[i + 1]], lang=path.stem, tokenizer=tokenizer,
                )
            )  # fmt: skip
        return merge_parts(path, parts, {"lang": path.stem, "tokenizer": tokenizer}, False)
    return write_store(path, train, val, lang=path.stem, tokenizer=tokenizer)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(tokenstore, "CHUNK_TOKENS", 256)
    monkeypatch.setattr(tokenstore, "SHARD_TOKENS", 1024)


def recorded_stores(tmp_path: Path, layout: str, monkeypatch) -> dict:
    monkeypatch.setattr(tokenstore, "IN_MEMORY_BYTES", 64 << 20 if "memory" in layout else 0)
    stores = {}
    for name in STORES:
        train, val, vocab = store_arrays(name)
        write_layout(layout, tmp_path / f"{name}.zarr", train, val, ident(vocab))
        stores[name] = open_store(tmp_path / f"{name}.zarr")
    return stores


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_format_and_reader_draws_the_recorded_batches(
    tmp_path, monkeypatch, small_chunks, layout
):
    stores = recorded_stores(tmp_path, layout, monkeypatch)
    reader = {
        "v1-memory": np.ndarray, "v1-raw": RawTokens, "v2-memory": np.ndarray,
        "v2-files": ShardedTokens, "v2-parts": ConcatTokens,
    }[layout]  # fmt: skip
    assert all(isinstance(s.train, reader) for s in stores.values())
    for key, (names, seq_len, batch, seed, stream, weights, steps) in SAMPLERS.items():
        sampler = BatchSampler([stores[n] for n in names], seq_len, batch, seed, stream, weights)
        for step in steps:
            expected = RECORDED[f"{key}/{step}"]
            assert np.array_equal(sampler.batch(step), expected), (key, step)
            for world in (2, 4):
                for rank in range(world):
                    if batch % world == 0:
                        rows = sampler.batch(step, rank, world)
                        assert np.array_equal(rows, expected[rank::world]), (key, step, rank)
        with sampler.local(1, 2) as ahead:  # read ahead in a thread, in and out of order
            for step in [*steps, steps[0]]:
                assert np.array_equal(ahead.batch(step), RECORDED[f"{key}/{step}"][1::2])
    for name, (n, seq_len, seed) in EVALS.items():
        starts, windows = eval_windows(stores[name], n, seq_len, seed)
        assert np.array_equal(starts, RECORDED[f"eval-{name}/starts"])
        assert np.array_equal(windows, RECORDED[f"eval-{name}/windows"])


def test_each_rank_reads_only_its_rows(tmp_path, monkeypatch, small_chunks):
    stores = recorded_stores(tmp_path, "v2-files", monkeypatch)
    read = []
    original = ShardedTokens.windows
    monkeypatch.setattr(
        ShardedTokens, "windows", lambda self, s, n: read.append(len(s)) or original(self, s, n)
    )
    sampler = BatchSampler([stores["a"], stores["b"], stores["c"]], 16, 12, 0, 1, [1, 2, 1])
    for rank in range(4):
        sampler.batch(2, rank, 4)
    assert sum(read) == 12  # the global batch's 12 windows once, not 4 × 12
    with pytest.raises(PlcError, match="no rank 4 of 4"):
        sampler.batch(0, 4, 4)
    with pytest.raises(PlcError, match="12 sequences has no rank 0 of 5"):
        sampler.local(0, 5)


GLOO_WORKER = """
import sys, numpy as np, torch.distributed as dist
import plc.data.tokenstore as tokenstore
from plc.data.sampling import BatchSampler
from plc.data.tokenstore import ShardedTokens, open_store

tokenstore.IN_MEMORY_BYTES = 0
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
read = []
original = ShardedTokens.windows
ShardedTokens.windows = lambda self, s, n: read.append(len(s)) or original(self, s, n)
stores = [open_store(f"{sys.argv[1]}/{name}.zarr") for name in "abc"]
sampler = BatchSampler(stores, 16, 12, 0, 1, [1, 2, 1])
with sampler.local(rank, world, stop=3) as batches:
    rows = [batches.batch(step) for step in range(3)]
gathered = [None] * world
dist.all_gather_object(gathered, (rows, sum(read)))
if rank == 0:
    np.savez(sys.argv[2], *[np.stack(g[0]) for g in gathered], reads=[g[1] for g in gathered])
dist.destroy_process_group()
"""


def test_two_gloo_ranks_each_read_their_rows_of_the_recorded_batches(
    tmp_path, monkeypatch, small_chunks
):
    recorded_stores(tmp_path, "v2-files", monkeypatch)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(GLOO_WORKER))
    env = {**os.environ, "PLC_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(tmp_path), str(tmp_path / "rows.npz")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "rows.npz")
    for rank in range(2):
        for step in range(3):
            assert np.array_equal(got[f"arr_{rank}"][step], RECORDED[f"mix/{step}"][rank::2])
    assert got["reads"].tolist() == [18, 18]  # 6 of the 12 windows a step, 3 steps, per rank


def test_format_2_is_plain_sharded_zarr_in_the_narrowest_dtype(tmp_path, small_chunks):
    rng = np.random.default_rng(0)
    for vocab, dtype in ((257, np.uint16), (65_536, np.uint16), (151_669, np.uint32)):
        train = rng.integers(0, vocab, 5000)
        path = write_store(tmp_path / f"{vocab}.zarr", train, train[:700], lang="x",
                           tokenizer=ident(vocab))  # fmt: skip
        arr = zarr.open_array(path / "train" / "0", mode="r")  # any Zarr v3 reader
        assert arr.dtype == dtype and np.array_equal(arr[:], train)
        assert arr.shards == (1024,) and arr.chunks == (256,)
        shard_files = sorted(p.name for p in (path / "train" / "0" / "c").iterdir())
        assert shard_files == ["0", "1", "2", "3", "4"]  # ⌈5000 / 1024⌉ files, not 20 chunks
        store = open_store(path)
        assert store.train.dtype == dtype and np.array_equal(store.train, train)
        assert store.attrs["format_version"] == 2 and store.attrs["parts"] == 1
    info = describe_store(path)
    # 5 + 1 shard files and 5 zarr.json (the store, two split groups, two arrays)
    assert (info.format_version, info.dtype, info.files) == (2, "uint32", 11)
    # A tokenizer that gives an id beyond its vocabulary: refused, nothing written.
    with pytest.raises(PlcError, match="do not fit the store's uint16"):
        with StoreWriter(tmp_path / "big.zarr", {"tokenizer": ident(257)}) as writer:
            writer.add("train", np.array([3, 70_000]))
            writer.commit()
    assert write_store(tmp_path / "wide.zarr", [70_000], [1], lang="x", tokenizer=ident(257))
    assert open_store(tmp_path / "wide.zarr").train.dtype == np.uint32  # arrays: the dtype fits
    assert not (tmp_path / "big.zarr").exists()
    assert not (tmp_path / ".big.zarr.partial").exists()


def test_format_2_compresses(tmp_path):
    repeated = np.tile(np.arange(300), 400)  # 120,000 ids that compress well
    path = write_store(
        tmp_path / "r.zarr", repeated, repeated[:500], lang="x", tokenizer=ident(257)
    )
    files = list((path / "train" / "0" / "c").iterdir())
    # One file: blosc-compressed chunks and the shard's fixed 64 KiB index, under 1 byte a token.
    assert len(files) == 1 and files[0].stat().st_size < 0.5 * 2 * repeated.size


def test_a_store_of_format_1_still_reads(tmp_path, monkeypatch):
    train, val, _ = store_arrays("a")
    path = write_v1_store(tmp_path / "old.zarr", train, val, ident(257))
    store = open_store(path)
    assert store.train.dtype == np.uint32 and np.array_equal(store.train, train)
    info = describe_store(path)
    assert (info.format_version, info.dtype, info.train_tokens) == (1, "uint32", len(train))
    monkeypatch.setattr(tokenstore, "IN_MEMORY_BYTES", 0)
    raw = open_store(path)
    assert isinstance(raw.train, RawTokens) and np.array_equal(raw.train[10:4000], train[10:4000])
    group = zarr.open_group(path, mode="r+")
    group.attrs["format_version"] = 3
    with pytest.raises(PlcError, match="store version 3; this plc reads versions 1 and 2"):
        open_store(path)


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "cut": data[: len(data) // 2],
                      "flip": data[:-10] + bytes(b ^ 0xFF for b in data[-10:])}[how])  # fmt: skip


@pytest.mark.parametrize("how", ["empty", "cut", "flip"])
@pytest.mark.parametrize("version", [1, 2])
def test_a_damaged_chunk_is_one_line_naming_the_store(
    tmp_path, monkeypatch, capsys, small_chunks, version, how
):
    train, val, vocab = store_arrays("a")
    path = tmp_path / "en.zarr"
    if version == 1:
        write_v1_store(path, train, val, ident(vocab), chunk=1000)
        chunk = path / "train" / "c" / "2"
    else:
        write_store(path, train, val, lang="en", tokenizer=ident(vocab))
        chunk = path / "train" / "0" / "c" / "2"
    if version == 1 and how == "flip":
        pytest.skip("format 1 has no checksums: flipped bytes read as other tokens")
    damage(chunk, how)
    assert_bad_input(cli(monkeypatch, capsys, "data", "info", path), str(path), "damaged")
    monkeypatch.setattr(tokenstore, "IN_MEMORY_BYTES", 0)  # read window by window, in a thread
    store = open_store(path)
    with pytest.raises(PlcError, match=f"token store {path} is damaged: train"):
        with BatchSampler([store], 64, 64, 0, 1).local(0, 1) as batches:
            for step in range(4):
                batches.batch(step)


def test_force_replaces_a_store_but_never_a_folder_it_did_not_make(tmp_path, monkeypatch, capsys):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("years of work")
    notes = tmp_path / "notes.zarr"
    notes.write_text("a file, not a store")
    for out in (thesis, notes):
        proc = cli(monkeypatch, capsys, "shard", "--lang", "vi", "--out", out, "--force")
        assert_bad_input(proc, str(out), "is not a token store")
    assert (thesis / "chapter1.tex").read_text() == "years of work"
    assert notes.read_text() == "a file, not a store"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.zarr", "thesis"]
    with pytest.raises(PlcError, match="is not a token store"):
        StoreWriter(thesis, {"tokenizer": ident(257)}, force=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    for _ in range(2):  # an empty folder, then the store written there
        proc = cli(
            monkeypatch, capsys, "shard", "--lang", "vi", "--out", empty, "--force", "--json"
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["path"] == str(empty) and open_store(empty).lang == "vi"
    assert not list(tmp_path.glob(".*"))  # nothing left beside them
