"""The data path: store codecs, `plc shard` throughput, the loader, and Zarr appends.

    python benchmarks/bench_data.py [--mb 16] [--store-tokens 50331648] [--steps 50]
        [--only codecs,shard,loader,append] [--append-chunks 3000]

codecs: bytes a token and decode speed of the chunk codecs on the embedded corpus's ids (Qwen3 and
  bytes, 9 languages, documents in a random order; and with the tokens shuffled, which leaves only
  the ids' frequencies to compress: the realistic bound for a large corpus).
shard: --mb MB of text (the embedded corpus repeated, as 16 .txt files) through `plc shard`, each
  run in its own process: 1 and 2 tokenizer processes, and 2 parts written by 1 or 2 jobs at once
  then merged; tokens/s, per core, bytes a token on disk and peak RSS, against the bare tokenizer
  (tiktoken's encode_ordinary for qwen3, bytes for byte) on the same text in the same run.
loader: one rank's rows of the paper's step (256 windows of 2,049 tokens; 8 ranks) from a Qwen3
  store of --store-tokens tokens that is not read into memory: format 2 (shard files, blosc) and
  format 1 (raw uint32 chunk files), cold (a new reader, the files dropped from the page cache)
  and warm; the old data path (every rank reads the whole batch) for comparison; and the wait a
  step sees with the read-ahead thread against a step that computes for as long as the read.
append: seconds per Zarr `append` of a 1,024-token chunk as an array grows (run it once per Zarr
  version: PYTHONPATH=/path/to/zarr-3.1.5 python benchmarks/bench_data.py --only append).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# What a 314M model at 45 % MFU on an H100-class GPU consumes (issue 31): a requirement, not
# measured here (no GPU).
GPU_TOKENS_PER_S = 250_000


def corpus_ids(tokenizer: str, seed: int = 0) -> np.ndarray:
    from plc.data.sources import embedded_languages, open_source
    from plc.data.tokenizers import get_tokenizer

    tok = get_tokenizer(tokenizer)
    docs = [d for lang in embedded_languages() for d in open_source("embedded", lang).documents()]
    order = np.random.default_rng(seed).permutation(len(docs))
    return np.concatenate([np.append(tok.encode(docs[i]), tok.eos_id) for i in order])


# ------------------------------------------------------------------------------------ codecs


def pack18(ids: np.ndarray) -> bytes:
    bits = np.unpackbits(ids.astype("<u4").view(np.uint8).reshape(-1, 4)[:, 2::-1], axis=1)
    return np.packbits(bits[:, 6:]).tobytes()


def bench_codecs() -> None:
    from numcodecs import Blosc, Zstd

    from plc.data.tokenstore import BLOSC, CHUNK_TOKENS

    plc = f"blosc-zstd-{BLOSC['clevel']}-shuffle (plc)"
    codecs = {"zstd-3": Zstd(3), plc: Blosc(BLOSC["cname"], BLOSC["clevel"], Blosc.SHUFFLE)}
    codecs["blosc-zstd-5-shuffle"] = Blosc("zstd", 5, Blosc.SHUFFLE)
    print(f"codecs: chunks of {CHUNK_TOKENS:,} tokens; bytes a token on disk, Mtokens/s a core")
    print(
        f"{'ids':>5} {'order':>15} {'dtype':>7} {'codec':>28} {'B/token':>7} {'encode':>6} {'decode':>6}"
    )
    rng = np.random.default_rng(0)
    for name in ("qwen3", "byte"):
        ids = corpus_ids(name)
        for order, arr in (("documents", ids), ("tokens shuffled", rng.permutation(ids))):
            n = arr.size // CHUNK_TOKENS * CHUNK_TOKENS
            chunks = arr[:n].reshape(-1, CHUNK_TOKENS)
            for dtype in ["uint32", "uint16" if name == "byte" else "18 bits"]:
                for label, codec in codecs.items():
                    if dtype == "18 bits" and "blosc" in label:
                        continue
                    raw = [pack18(c) if dtype == "18 bits" else c.astype(dtype) for c in chunks]
                    enc, dec = [], []
                    for _ in range(3):  # the best of three passes: this machine is shared
                        t = time.perf_counter()
                        coded = [codec.encode(r) for r in raw]
                        enc.append(time.perf_counter() - t)
                        t = time.perf_counter()
                        for c in coded:
                            codec.decode(c)
                        dec.append(time.perf_counter() - t)
                    size = sum(len(c) for c in coded) / n
                    print(
                        f"{name:>5} {order:>15} {dtype:>7} {label:>28} {size:>7.3f} "
                        f"{n / min(enc) / 1e6:>6.0f} {n / min(dec) / 1e6:>6.0f}"
                    )
        print(f"{name:>5}: {ids.size:,} tokens; raw uint32 = 4 B, uint16 = 2 B, 18 bits = 2.25 B")


# ------------------------------------------------------------------------------------- shard

SHARD_CHILD = """
import json, re, resource, sys, time
import zarr
from plc.data.shard import shard
from plc.data.tokenizers import get_tokenizer
kw = json.loads(sys.argv[1])
tok = get_tokenizer(kw["tokenizer"])
tok.encode("warm")  # the vocabulary loaded: what follows is the shard's own work
before = resource.getrusage(resource.RUSAGE_SELF)
t = time.perf_counter()
res = shard(**kw)
hwm = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
cpu = me.ru_utime + me.ru_stime - before.ru_utime - before.ru_stime + kids.ru_utime + kids.ru_stime
print(json.dumps({"tokens": res.train_tokens + res.val_tokens, "docs": res.docs_read,
                  "seconds": time.perf_counter() - t, "cpu": cpu, "rss_kb": hwm,
                  "child_rss_kb": kids.ru_maxrss}))
"""


def run_shard(**kw) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", SHARD_CHILD, json.dumps(kw)],
        capture_output=True, text=True, check=True, env={**os.environ, "PLC_THREADS": "1"},
    )  # fmt: skip
    return json.loads(proc.stdout)


def store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bench_shard(tmp: Path, mb: float) -> None:
    from plc.data.sources import embedded_languages, open_source
    from plc.data.tokenizers import get_tokenizer

    docs = [d for lang in embedded_languages() for d in open_source("embedded", lang).documents()]
    text = "\n\n".join(docs) + "\n\n"
    reps = max(16, round(mb * 1e6 / len(text.encode())))
    src = tmp / "corpus"
    src.mkdir()
    for f in range(16):
        (src / f"{f:02d}.txt").write_text(text * (reps // 16), encoding="utf-8")
    size = sum(f.stat().st_size for f in src.iterdir())
    print(
        f"\nshard: {size / 1e6:.1f} MB of text (9 languages) in 16 files; each run its own process"
    )
    head = f"{'tokenizer':>9} {'how':>24} {'procs':>5} {'tokens/s':>11} {'tok/CPU-s':>10}"
    print(head + f" {'B/token':>8} {'RSS MiB':>13} {'s':>6}")
    for name in ("byte", "qwen3"):
        tok = get_tokenizer(name)
        files = sorted(src.iterdir())
        t, cpu = time.perf_counter(), time.process_time()
        bare = 0
        for f in files:  # the bare tokenizer, documents as plc shard reads them
            for doc in f.read_text(encoding="utf-8").split("\n\n"):
                if name == "qwen3":
                    bare += len(tok._enc.encode_ordinary(doc)) + 1
                else:
                    bare += len(doc.encode("utf-8")) + 1
        dt, cpu = time.perf_counter() - t, time.process_time() - cpu
        what = "tiktoken encode_ordinary" if name == "qwen3" else "str.encode"
        print(f"{name:>9} {what:>24} {1:>5} {bare / dt:>11,.0f} {bare / cpu:>10,.0f}")
        runs = [("1 process", 1, 1, 1), ("2 tokenizer processes", 2, 1, 2)]
        runs += [("2 parts, 1 job", 1, 2, 1), ("2 parts, 2 jobs at once", 2, 2, 2)]
        for label, workers, parts, cores in runs:
            out = tmp / f"{name}-{workers}-{parts}.zarr"
            kw = dict(lang="en", out=str(out), source=str(src), tokenizer=name, force=True)
            r = run_shard(**kw, workers=workers, parts=parts)
            rss = f"{r['rss_kb'] // 1024}/{r['child_rss_kb'] // 1024}"
            rate = r["tokens"] / r["seconds"]
            print(
                f"{name:>9} {label:>24} {cores:>5} {rate:>11,.0f} {r['tokens'] / r['cpu']:>10,.0f} "
                f"{store_bytes(out) / r['tokens']:>8.3f} {rss:>13} {r['seconds']:>6.1f}"
            )
    print("tok/CPU-s: tokens per CPU-second of the command and its workers (robust to a busy")
    print(
        "machine, unlike tokens/s); RSS: the process / its largest worker (peak); B/token: on disk"
    )


# ------------------------------------------------------------------------------------ loader


def page_cache(path: Path, keep: bool) -> None:
    """Read every file of a store into the page cache (warm), or drop them from it (cold)."""
    for f in path.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                if keep:
                    while os.read(fd, 1 << 24):
                        pass
                else:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def write_v1(path: Path, train: np.ndarray, val: np.ndarray, ident: dict) -> None:
    """A format-1 store (raw uint32, 2^20-token chunks), as plc wrote them before format 2."""
    import zarr

    group = zarr.open_group(path, mode="w")
    for name, tokens in (("train", train), ("val", val)):
        arr = group.create_array(name, shape=(0,), dtype="uint32", chunks=(1 << 20,),
                                 compressors=None)  # fmt: skip
        for i in range(0, tokens.size, 1 << 20):
            arr.append(tokens[i : i + (1 << 20)].astype(np.uint32))
    group.attrs.update({"format": "plc-token-store", "format_version": 1, "tokenizer": ident})


def bench_loader(tmp: Path, n: int, steps: int) -> None:
    from plc.data.sampling import BatchSampler
    from plc.data.tokenstore import open_store, write_store

    ids = corpus_ids("qwen3")
    train = np.resize(ids, n)  # the corpus over and over: no repeat inside a chunk
    ident = {"name": "qwen3", "vocab_size": 151_669, "eos_id": 151_643, "fingerprint": "bench"}
    t = time.perf_counter()
    write_store(tmp / "v2.zarr", train, ids, lang="x", tokenizer=ident, force=True)
    write_s = time.perf_counter() - t
    write_v1(tmp / "v1.zarr", train, ids, ident)
    v2, v1 = (store_bytes(tmp / f"{v}.zarr") for v in ("v2", "v1"))
    files = {v: sum(1 for f in (tmp / f"{v}.zarr").rglob("*") if f.is_file()) for v in ("v1", "v2")}
    print(f"\nloader: a Qwen3 store of {n:,} train tokens, read window by window")
    print(
        f"format 2: {v2 / n:.2f} B/token, {files['v2']} files, written at {n / write_s:,.0f} tokens/s"
    )
    print(f"format 1: {v1 / n:.2f} B/token, {files['v1']} files")
    seq, batch, world = 2048, 256, 8
    need = f"(needed: ≈ {GPU_TOKENS_PER_S:,} tokens/s per rank, a requirement, not measured)"
    print(f"one rank of {world}: {batch // world} windows of {seq + 1} a step {need}")
    print(f"{'store':>6} {'reads':>18} {'page cache':>10} {'tokens/s':>12} {'ms/step':>8}")
    rows = batch // world  # the tokens a rank trains on, whatever it reads
    for name in ("v2", "v1"):
        for label, rank_world in (("its rows", (0, world)), ("whole batch (old)", (0, 1))):
            for cache in ("cold", "warm"):
                # A new reader each time; cold: the store's files dropped from the page cache.
                page_cache(tmp / f"{name}.zarr", keep=cache == "warm")
                sampler = BatchSampler([open_store(tmp / f"{name}.zarr")], seq, batch, 0, 1)
                t = time.perf_counter()
                for step in range(steps):
                    sampler.batch(step, *rank_world)
                dt = (time.perf_counter() - t) / steps
                print(
                    f"{name:>6} {label:>18} {cache:>10} {rows * seq / dt:>12,.0f} {dt * 1e3:>8.2f}"
                )
    store = open_store(tmp / "v2.zarr")
    sampler = BatchSampler([store], seq, batch, 0, 2)
    t = time.perf_counter()
    for step in range(steps):
        sampler.batch(step, 0, world)
    read = (time.perf_counter() - t) / steps
    for ahead in (False, True):
        waited = 0.0
        batches = sampler.local(0, world) if ahead else None
        for step in range(steps):
            t = time.perf_counter()
            batches.batch(step) if ahead else sampler.batch(step, 0, world)
            waited += time.perf_counter() - t
            time.sleep(read)  # a training step as long as the read: the GPU's time, GIL released
        if batches:
            batches.close()
        label = "with read-ahead" if ahead else "without"
        print(f"a step of {read * 1e3:.1f} ms waits {waited / steps * 1e3:.2f} ms for data {label}")


# ------------------------------------------------------------------------------------ append


def bench_append(chunks: int) -> None:
    import zarr

    with tempfile.TemporaryDirectory() as d:
        arr = zarr.open_group(Path(d) / "a.zarr", mode="w").create_array(
            "t", shape=(0,), dtype="uint32", chunks=(1024,), compressors=None
        )
        block = np.arange(1024, dtype=np.uint32)
        times = []
        for _ in range(chunks):
            t = time.perf_counter()
            arr.append(block)
            times.append(time.perf_counter() - t)
        # The median of 100 appends before each mark: the cost of one as the array grows.
        marks = [m for m in (100, chunks // 2, chunks) if m >= 100]
        per = ", ".join(f"{np.median(times[m - 100 : m]) * 1e3:.1f} ms at {m:,}" for m in marks)
        print(
            f"\nappend (zarr {zarr.__version__}): {chunks:,} appends in {sum(times):.1f} s; {per}"
        )
        # What an append adds as a store grows: growing an array of n chunks by one (metadata
        # only), up to the 95,367 chunks of 2^20 tokens of a 100B-token format-1 store.
        for n in (10_000, 95_367):
            arr.resize((1024 * n,))
            t = time.perf_counter()
            arr.resize((1024 * (n + 1),))
            dt = time.perf_counter() - t
            print(f"growing an array of {n:,} chunks by one: {dt * 1e3:.1f} ms")
        print(
            f"so the {n:,} appends of such a store spend ≈ {dt * n / 2 / 60:.0f} minutes resizing"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=16, help="MB of text to shard")
    ap.add_argument("--store-tokens", type=int, default=48 << 20, help="tokens of the loader store")
    ap.add_argument("--steps", type=int, default=50, help="steps the loader reads, warm")
    ap.add_argument("--append-chunks", type=int, default=3000, help="Zarr appends to time")
    ap.add_argument("--only", default="codecs,shard,loader,append", help="sections to run")
    args = ap.parse_args()
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory() as d:
        if "codecs" in only:
            bench_codecs()
        if "shard" in only:
            bench_shard(Path(d), args.mb)
        if "loader" in only:
            bench_loader(Path(d), args.store_tokens, args.steps)
    if "append" in only:
        bench_append(args.append_chunks)


if __name__ == "__main__":
    main()
