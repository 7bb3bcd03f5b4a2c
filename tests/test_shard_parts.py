"""`plc shard` in parts: N jobs (`--part I/N`) or one command (`--parts N`, `--workers K`) make
the same store as one process, a failed part is redone alone, stale parts are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_bad_input, cli
from test_data import culturax_like, make_docs, split_docs

import plc.data.sources as sources
from plc.data.shard import part_path, shard
from plc.data.tokenstore import ConcatTokens, open_store, store_attrs
from plc.errors import PlcError


def folder(root: Path, files: int = 7, docs: int = 420) -> Path:
    """`files` .jsonl files of unequal sizes holding `docs` documents in all."""
    texts = make_docs(docs)
    cuts = np.linspace(0, docs, files + 1).astype(int)
    cuts[1:-1] += np.arange(files - 1) % 3 * 7  # unequal files
    root.mkdir(parents=True)
    for f in range(files):
        lines = [json.dumps({"text": t}) for t in texts[cuts[f] : cuts[f + 1]]]
        (root / f"{f:02d}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def same_store(a, b) -> bool:
    return np.array_equal(a.train[:], b.train[:]) and np.array_equal(a.val[:], b.val[:])


def test_parts_make_the_store_of_one_process(tmp_path):
    src = str(folder(tmp_path / "corpus"))
    one = open_store(shard("en", tmp_path / "one.zarr", source=src, seed=3).path)
    for workers in (1, 2):  # one command: parts in turn, or two at a time in processes
        out = tmp_path / f"w{workers}.zarr"
        res = shard("en", out, source=src, seed=3, parts=3, workers=workers)
        assert (res.parts, res.parts_reused, res.docs_read) == (3, 0, 420)
        store = open_store(out)
        assert same_store(store, one) and store.attrs["parts"] == 3
        assert (store.attrs["train_docs"], store.attrs["val_docs"]) == (
            one.attrs["train_docs"],
            one.attrs["val_docs"],
        )
        # Merged by hard links: the parts stay and share the store's files.
        linked = next((out / "train" / "1" / "c").iterdir())
        assert linked.stat().st_nlink == 2
        assert (
            linked.stat().st_ino == (part_path(out, 2, 3) / "train/0/c" / linked.name).stat().st_ino
        )
    jobs = tmp_path / "jobs.zarr"  # three jobs, then the merge
    for i in (3, 1, 2):
        part = shard("en", jobs, source=src, seed=3, part=(i, 3))
        assert part.path == str(part_path(jobs, i, 3)) and 0 < part.docs_read < 420
        assert store_attrs(part.path)["part"]["index"] == i
    merged = shard("en", jobs, source=src, seed=3, parts=3)
    assert (merged.parts_reused, merged.docs_read) == (3, 0)
    assert same_store(open_store(jobs), one)
    with pytest.MonkeyPatch.context() as m:  # read window by window across the pieces
        m.setattr("plc.data.tokenstore.IN_MEMORY_BYTES", 0)
        pieces = open_store(jobs)
        assert isinstance(pieces.train, ConcatTokens) and same_store(pieces, one)


def test_a_failed_part_is_redone_alone(tmp_path, monkeypatch):
    src = folder(tmp_path / "corpus")
    out = tmp_path / "en.zarr"
    read, failing = sources._file_documents, []

    def flaky(path):  # a stream error in the middle of a file, while `failing`
        for k, doc in enumerate(read(path)):
            if k == 5 and failing:
                raise PlcError(f"error reading {path.name}: connection reset")
            yield doc

    monkeypatch.setattr(sources, "_file_documents", flaky)
    shard("en", out, source=str(src), part=(1, 3))
    failing.append(True)
    with pytest.raises(PlcError, match="connection reset"):
        shard("en", out, source=str(src), part=(2, 3))
    failing.clear()
    shard("en", out, source=str(src), part=(3, 3))
    assert not part_path(out, 2, 3).exists()
    assert not list(Path(f"{out}.parts").glob(".*"))  # the failed part left nothing behind
    monkeypatch.setattr(sources, "_file_documents", read)
    res = shard("en", out, source=str(src), parts=3)
    assert res.parts_reused == 2 and 0 < res.docs_read < 420  # part 2 alone was read
    one = open_store(shard("en", tmp_path / "one.zarr", source=str(src)).path)
    assert same_store(open_store(out), one)


def test_budgets_are_shared_by_the_parts(tmp_path):
    src = str(folder(tmp_path / "corpus"))
    res = shard("en", tmp_path / "b.zarr", source=src, parts=3, train_tokens=7001, val_tokens=700)
    assert (res.train_tokens, res.val_tokens) == (7001, 700)
    store = open_store(res.path)
    assert len(store.train) == 7001 and len(store.val) == 700
    assert not set(split_docs(store, "train")) & set(split_docs(store, "val"))
    with pytest.raises(PlcError, match=r"asked for 20,000 train tokens .* \(part \d of 3\)"):
        shard("en", tmp_path / "c.zarr", source=src, parts=3, train_tokens=60_000)


def test_stale_parts_are_refused_and_bad_parts_are_one_line(tmp_path, monkeypatch, capsys):
    src = folder(tmp_path / "corpus")
    out = tmp_path / "en.zarr"
    shard("en", out, source=str(src), part=(2, 3), seed=1)
    with pytest.raises(PlcError, match="other settings"):
        shard("en", out, source=str(src), parts=3, seed=0)
    res = shard("en", out, source=str(src), parts=3, seed=0, force=True)
    assert res.parts_reused == 0 and open_store(out).attrs["seed"] == 0
    base = ["shard", "--lang", "en", "--out", tmp_path / "x.zarr"]
    cases = [
        (["--part", "2/3"], ["embedded:en is 1 file", "3 parts"]),
        (["--source", src / "00.jsonl", "--parts", "2"], ["00.jsonl is 1 file"]),
        (["--source", src, "--parts", "8"], ["is 7 files", "8 parts"]),
        (["--source", src, "--part", "two"], ["--part takes I/N"]),
        (["--source", src, "--part", "4/3"], ["I must be one of 1…N"]),
        (["--source", src, "--part", "1/3", "--parts", "3"], ["not both"]),
        (["--source", "markov:1", "--parts", "2"], ["markov"]),
        (["--source", src, "--parts", "3", "--val-tokens", "2"], ["--val-tokens 2", "3 parts"]),
    ]
    for extra, fragments in cases:
        assert_bad_input(cli(monkeypatch, capsys, *base, *extra), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "en.zarr", "en.zarr.parts"]
    proc = cli(monkeypatch, capsys, *base, "--source", src, "--part", "1/2", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["path"].endswith("001-of-002.zarr")


def test_a_dataset_is_split_between_parts(tmp_path):
    repo = culturax_like(tmp_path)
    res = shard("vi", tmp_path / "vi.zarr", source=f"hf:{repo}", parts=2)
    store = open_store(res.path)
    docs = split_docs(store, "train") + split_docs(store, "val")
    assert len(docs) == len(set(docs)) == 30 and res.parts == 2  # every document once


def test_plans_shard_a_dataset_in_part_jobs_of_several_cores(tmp_path):
    from test_snakefile import parse_rules

    from plc.plan import build_plan
    from plc.plan.builder import SHARD_WORKERS
    from plc.plan.snakefile import render_snakefile

    kw = dict(sizes=["5M"], cycles=1, preset="paper", tokenizer="qwen3", probe_after=["ru"])
    plan = build_plan(source="hf:uonlp/CulturaX", **kw)
    rules = parse_rules(render_snakefile(plan))
    # 100B + 1B tokens a training language: 11 part jobs, then the merge; vi (20B + 1B): 3.
    en = [r for name, r in rules.items() if name.startswith("shard_en_zarr_parts_")]
    assert len(en) == 11 and len([n for n in rules if n.startswith("shard_vi_zarr_parts")]) == 3
    assert {r["threads"] for r in en} == {str(SHARD_WORKERS)}
    assert all(int(r["resources"]["mem_mb"]) > 2048 for r in en)
    assert "--part 4/11 --workers 8" in en[3]["shell"]
    merge = rules["shard_en"]
    assert merge["input"] == [r["output"][0] for r in en] and merge["threads"] == "1"
    assert merge["shell"].endswith("--parts 11") and merge["output"] == ["data/en.zarr/zarr.json"]
    # A folder of 2 files: at most 2 parts; the embedded corpus: one single-process job.
    for lang in ("en", "zh", "fr", "ja", "es", "de", "pt", "ru", "vi"):
        (tmp_path / lang).mkdir()
        for f in ("a.txt", "b.txt"):
            (tmp_path / lang / f).write_text("text")
    folder = build_plan(source=f"{tmp_path}/{{lang}}", **kw)
    shards = [j for j in folder.jobs if j.command == "shard" and "en.zarr" in j.output]
    assert [j.args[j.args.index("--part") + 1] for j in shards[:-1]] == ["1/2", "2/2"]
    assert shards[-1].args[-2:] == ["--parts", "2"] and len(shards) == 3
    embedded = build_plan(**kw)
    job = next(j for j in embedded.jobs if j.command == "shard")
    assert "--workers" not in job.args and "--part" not in job.args
