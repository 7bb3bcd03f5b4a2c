"""Data: sources, tokenizers, `plc shard`, the token store, sampling, and their bad inputs."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_bad_input, cli, run_plc

import plc.data.tokenstore as tokenstore
from plc.data import tokenizers
from plc.data.sampling import BatchSampler, eval_windows
from plc.data.shard import doc_uniforms, shard
from plc.data.sources import embedded_languages, open_source
from plc.data.tokenizers import ByteTokenizer, get_tokenizer, qwen_vocab_file
from plc.data.tokenstore import ShardedTokens, describe_store, open_store, write_store
from plc.errors import PlcError
from plc.sizes import padded_vocab

LANGS = ["en", "zh", "fr", "ja", "es", "de", "pt", "ru", "vi"]
# One original sentence per language (not from the corpus), for tokenizer round trips.
SENTENCES = {
    "en": "The lighthouse keeper counted 1,204 ships that winter — and wrote each name down.",
    "zh": "今天早上，图书馆门口排起了长队，大家都想借那本新出版的小说。",
    "fr": "« Où est passé le chat ? » demanda-t-elle, en fermant la fenêtre à 22 h 15.",
    "ja": "駅前の小さなパン屋は、毎朝六時にシャッターを開けます。",
    "es": "¿Cuántos kilómetros faltan? —preguntó el niño mientras el tren cruzaba el puente.",
    "de": "Die Brücke über die Ache wurde 1897 gebaut und übersteht jedes Frühjahrshochwasser.",
    "pt": "A avó guardava as receitas num caderno de capa azul, já gasto pelo tempo.",
    "ru": "Вечером над озером поднялся туман, и рыбаки вернулись к причалу раньше обычного.",
    "vi": "Buổi chợ phiên ở đầu làng họp từ lúc gà gáy cho đến khi mặt trời lên cao.",
}
BYTE = ByteTokenizer().identity()
needs_qwen = pytest.mark.skipif(
    qwen_vocab_file() is None, reason="qwen3 vocabulary: pip install --no-deps dashscope"
)


def make_docs(n: int = 40) -> list[str]:
    """Distinct documents of varied length, each naming its index."""
    rng = np.random.default_rng(1)
    words = "river stone lamp harbour winter garden letter bridge market window".split()
    return [
        f"Document {i}: " + " ".join(rng.choice(words, size=int(rng.integers(5, 60))))
        for i in range(n)
    ]


def split_docs(store, split: str) -> list[str]:
    """The documents of a byte-tokenized store split, decoded."""
    ids = np.asarray(getattr(store, split)[:])
    cuts = np.flatnonzero(ids == BYTE["eos_id"])
    parts = np.split(ids, cuts + 1)
    return [ByteTokenizer().decode(p[p != BYTE["eos_id"]]) for p in parts if p.size]


# -------------------------------------------------------------------------------- tokenizers


def test_byte_tokenizer_round_trips_every_language():
    tok = get_tokenizer("byte")
    assert (tok.vocab_size, tok.eos_id, padded_vocab(tok.vocab_size)) == (257, 256, 320)
    for text in SENTENCES.values():
        ids = tok.encode(text)
        assert ids.dtype == np.uint32 and ids.size == len(text.encode())
        assert tok.decode(np.append(ids, tok.eos_id)) == text


@needs_qwen
def test_qwen3_known_encodings_identity_and_padding():
    tok = get_tokenizer("qwen3")
    assert tok.encode("Hello world").tolist() == [9707, 1879]
    assert tok.encode("Hello, world!").tolist() == [9707, 11, 1879, 0]
    assert tok.encode("你好").tolist() == [108386]
    ident = tok.identity()
    assert (ident["name"], ident["vocab_size"], ident["eos_id"]) == ("qwen3", 151_669, 151_643)
    assert padded_vocab(ident["vocab_size"]) == 151_680
    assert ident["fingerprint"] != BYTE["fingerprint"] and len(ident["fingerprint"]) == 16
    assert tok.decode([151_643, 151_667]) == "<|endoftext|><think>"
    # Control tokens in a corpus are text, never EOS; padding ids (≥ 151,669) decode to nothing.
    assert 151_643 not in tok.encode("a <|endoftext|> b").tolist()
    assert tok.decode([9707, 151_670, 151_679]) == "Hello"
    # NFC first, as Qwen's tokenizer.json does: composed and decomposed "é" encode alike.
    assert tok.encode("café").tolist() == tok.encode(unicodedata.normalize("NFD", "café")).tolist()


@needs_qwen
@pytest.mark.parametrize("lang", LANGS)
def test_qwen3_round_trips_all_nine_languages(lang):
    tok = get_tokenizer("qwen3")
    assert tok.decode(tok.encode(SENTENCES[lang])) == SENTENCES[lang]
    docs = list(open_source("embedded", lang).documents())
    ids = [tok.encode(d) for d in docs]
    assert [tok.decode(i) for i in ids] == [unicodedata.normalize("NFC", d) for d in docs]
    # BPE compresses every language well below one token per UTF-8 byte.
    assert sum(i.size for i in ids) < 0.5 * sum(len(d.encode()) for d in docs)


def test_qwen3_missing_vocabulary_says_how_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(tokenizers, "qwen_vocab_file", lambda: None)
    with pytest.raises(PlcError, match=r"pip install --no-deps dashscope"):
        get_tokenizer("qwen3")
    out = tmp_path / "en.zarr"
    proc = cli(monkeypatch, capsys, "shard", "--lang", "en", "--tokenizer", "qwen3", "--out", out)
    assert_bad_input(proc, "qwen.tiktoken", "pip install --no-deps dashscope")
    assert not out.exists() and not list(tmp_path.iterdir())


def hf_tokenizer_dir(path: Path) -> Path:
    """A small byte-level BPE trained here and saved as a transformers tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|eos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(make_docs(), trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eos|>").save_pretrained(path)
    return path


def test_hf_tokenizer_from_a_local_folder(tmp_path):
    path = hf_tokenizer_dir(tmp_path / "tok")
    tok = get_tokenizer(f"hf:{path}")
    ident = tok.identity()
    assert ident["name"] == f"hf:{path}" and ident["eos_id"] == 0
    assert ident["vocab_size"] == len(tok._tok) > 256
    for text in ("Document 7: river stone", SENTENCES["vi"]):
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("river stone lamp").size < len("river stone lamp")
    assert get_tokenizer(f"hf:{path}").identity() == ident  # stable across loads

    res = shard("en", tmp_path / "en.zarr", tokenizer=f"hf:{path}")
    store = open_store(res.path)
    assert store.tokenizer == ident and res.train_docs + res.val_docs == res.docs_read
    assert int(store.train[-1]) == ident["eos_id"]
    with pytest.raises(PlcError, match="does not exist"):
        get_tokenizer(f"hf:{tmp_path / 'nope'}")


@needs_qwen
def test_init_with_qwen3_pads_the_vocabulary_and_checks_stores(tmp_path):
    from plc.store import check_tokenizer, load_checkpoint

    proc = run_plc(
        "init", "--size", "nano", "--tokenizer", "qwen3", "--context", "32",
        "--out", tmp_path / "c0.pt", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["vocab_size"] == 151_680
    ckpt = load_checkpoint(tmp_path / "c0.pt")
    assert ckpt.config.vocab_size == 151_680
    assert ckpt.model["transformer.wte.weight"].shape[0] == 151_680
    qwen = open_store(shard("vi", tmp_path / "q.zarr", tokenizer="qwen3").path)
    check_tokenizer(ckpt, qwen.tokenizer, "q.zarr")  # same tokenizer: accepted
    byte = open_store(shard("vi", tmp_path / "b.zarr").path)
    with pytest.raises(PlcError, match="tokenized with 'byte' but the checkpoint expects 'qwen3'"):
        check_tokenizer(ckpt, byte.tokenizer, "b.zarr")


# ----------------------------------------------------------------------------------- sources


def test_embedded_corpus_has_nine_languages_of_varied_prose():
    assert embedded_languages() == sorted(LANGS)
    for lang in LANGS:
        docs = list(open_source("embedded", lang).documents())
        size = sum(len(d.encode()) for d in docs)
        assert size >= 20_000, (lang, size)
        assert len(docs) >= 10 and len(set(docs)) == len(docs), lang
    vi = "\n".join(open_source("embedded", "vi").documents())
    assert "ư" in vi and "đ" in vi.lower()


def test_default_shard_takes_all_documents_and_holds_out_ten_percent(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    proc = cli(monkeypatch, capsys, "shard", "--lang", "vi", "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    docs = list(open_source("embedded", "vi").documents())
    assert res["path"] == str(Path("data") / "vi.zarr")
    assert res["docs_read"] == res["train_docs"] + res["val_docs"] == len(docs)
    assert 1 <= res["val_docs"] <= max(1, round(0.25 * len(docs)))
    total = sum(len(d.encode()) + 1 for d in docs)
    assert res["train_tokens"] + res["val_tokens"] == total
    store = open_store("data/vi.zarr")
    assert sorted(split_docs(store, "train") + split_docs(store, "val")) == sorted(docs)
    assert store.attrs["source"] == "embedded:vi" and store.attrs["tokenizer"] == BYTE
    assert store.train.shape == (res["train_tokens"],) and store.train.dtype == np.uint16
    info = json.loads(cli(monkeypatch, capsys, "data", "info", "data/vi.zarr", "--json").stdout)
    assert (info["train_tokens"], info["val_docs"]) == (res["train_tokens"], res["val_docs"])
    assert info["sample_text"] == ByteTokenizer().decode(store.train[:64])
    text = cli(monkeypatch, capsys, "data", "info", "data/vi.zarr").stdout
    assert "embedded:vi" in text and f"{res['train_tokens']:,} tokens" in text


def write_sources(root: Path, docs: list[str]) -> dict[str, Path]:
    """The same documents in every local format."""
    import zstandard

    root.mkdir(parents=True, exist_ok=True)
    txt = "\n\n".join(d.replace(": ", ":\n", 1) for d in docs) + "\n"  # multi-line paragraphs
    jsonl = "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs))
    paths = {
        "txt": root / "a.txt",
        "txt.gz": root / "a.txt.gz",
        "jsonl": root / "a.jsonl",
        "jsonl.zst": root / "a.jsonl.zst",
        "parquet": root / "a.parquet",
    }
    paths["txt"].write_text("\n\n" + txt.replace("\n\n", "\n  \n\n", 3), encoding="utf-8")
    paths["txt.gz"].write_bytes(gzip.compress(txt.encode()))
    paths["jsonl"].write_text(jsonl + "\n", encoding="utf-8")
    paths["jsonl.zst"].write_bytes(zstandard.ZstdCompressor().compress(jsonl.encode()))
    pq.write_table(pa.table({"id": list(range(len(docs))), "text": docs}), paths["parquet"])
    return paths


def test_every_local_format_yields_the_same_documents(tmp_path):
    docs = make_docs(30)
    as_txt = [d.replace(": ", ":\n", 1) for d in docs]
    for kind, path in write_sources(tmp_path / "src", docs).items():
        got = list(open_source(str(path), "en").documents())
        assert got == (as_txt if kind.startswith("txt") else docs), kind
        res = shard("en", tmp_path / f"{kind}.zarr", source=str(path))
        assert res.docs_read == 30 and res.source == f"file:{path.resolve()}"


def test_a_folder_reads_its_files_in_an_order_shuffled_by_seed(tmp_path):
    docs = make_docs(60)
    corpus = tmp_path / "corpus"
    (corpus / "b").mkdir(parents=True)
    (corpus / "README.md").write_text("not data")
    (corpus / ".hidden.txt").write_text("skipped")
    for f in range(6):  # a.txt, b/1.jsonl, a.txt, b/3.jsonl, …: ten documents each
        ten = docs[10 * f : 10 * f + 10]
        if f % 2:
            (corpus / "b" / f"{f}.jsonl").write_text(
                "".join(json.dumps({"text": d}) + "\n" for d in ten)
            )
        else:
            (corpus / f"{f}.txt").write_text("\n\n".join(ten))
    orders = {}
    for seed in range(4):
        got = list(open_source(str(corpus), "en", seed).documents())
        assert sorted(got) == sorted(docs)
        files = tuple(int(d.split()[1].rstrip(":")) // 10 for d in got[::10])
        assert all(
            got[10 * k : 10 * k + 10] == docs[10 * f : 10 * f + 10] for k, f in enumerate(files)
        )
        orders[seed] = files
    assert list(open_source(str(corpus), "en", 2).documents()) == list(
        open_source(str(corpus), "en", 2).documents()
    )  # the same seed, the same order
    assert len(set(orders.values())) > 1 and set(orders.values()) != {(0, 1, 2, 3, 4, 5)}
    res = shard("en", tmp_path / "en.zarr", source=str(corpus), seed=1)
    store = open_store(res.path)
    assert sorted(split_docs(store, "train") + split_docs(store, "val")) == sorted(docs)


def culturax_like(root: Path) -> Path:
    """A local dataset laid out like uonlp/CulturaX: <lang>/<lang>_part_NNNNN.parquet + configs."""
    repo = root / "CulturaX"
    for lang in ("vi", "en"):
        (repo / lang).mkdir(parents=True)
        for part in range(2):
            texts = [f"{lang} part {part} doc {i}: " + "lorem " * (i + 3) for i in range(15)]
            table = pa.table(
                {
                    "text": texts,
                    "timestamp": ["2020"] * 15,
                    "url": ["u"] * 15,
                    "source": ["mC4"] * 15,
                }
            )
            pq.write_table(table, repo / lang / f"{lang}_part_{part:05d}.parquet")
    configs = "".join(
        f'- config_name: {lang}\n  data_files: "{lang}/*.parquet"\n' for lang in ("vi", "en")
    )
    (repo / "README.md").write_text(f"---\nconfigs:\n{configs}---\n# CulturaX-like fixture\n")
    return repo


def test_hf_datasets_in_streaming_mode_with_culturax_configs(tmp_path):
    repo = culturax_like(tmp_path)
    res = shard("vi", tmp_path / "vi.zarr", source=f"hf:{repo}", workers=1)
    assert res.source == f"hf:{repo}:vi" and res.docs_read == 30
    store = open_store(res.path)
    got = split_docs(store, "train") + split_docs(store, "val")
    assert len(got) == 30 and all(d.startswith("vi part") for d in got)
    explicit = shard("vi", tmp_path / "en.zarr", source=f"hf:{repo}:en")
    assert explicit.source == f"hf:{repo}:en"
    assert split_docs(open_store(explicit.path), "train")[0].startswith("en part")
    with pytest.raises(PlcError, match="cannot open dataset"):
        shard("xx", tmp_path / "xx.zarr", source=f"hf:{repo}")


# ------------------------------------------------------------------------------ split, budgets


def test_val_is_split_by_document_and_never_overlaps_train(tmp_path):
    docs = make_docs(200)
    src = write_sources(tmp_path / "src", docs)["jsonl"]
    stores = {}
    for k, seed in enumerate((0, 0, 1)):
        res = shard("en", tmp_path / f"s{k}.zarr", source=str(src), seed=seed)
        stores.setdefault(seed, []).append(open_store(res.path))
    for store, *again in stores.values():
        train, val = split_docs(store, "train"), split_docs(store, "val")
        assert not set(train) & set(val) and sorted(train + val) == sorted(docs)
        assert 10 <= len(val) <= 30  # ~10 % of 200
        for other in again:  # same seed: the same split, token for token
            assert np.array_equal(other.train, store.train)
            assert np.array_equal(other.val, store.val)
    assert set(split_docs(stores[0][0], "val")) != set(split_docs(stores[1][0], "val"))
    u = doc_uniforms(0, 0, 100_000)
    assert np.array_equal(u[500:600], doc_uniforms(0, 500, 100))  # a function of (seed, index)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


@needs_qwen
def test_workers_give_the_identical_store(tmp_path):
    src = write_sources(tmp_path / "src", make_docs(3000))["jsonl"]
    one = shard("en", tmp_path / "w1.zarr", source=str(src), tokenizer="qwen3", workers=1)
    two = shard("en", tmp_path / "w2.zarr", source=str(src), tokenizer="qwen3", workers=2)
    assert (one.train_tokens, one.val_tokens, one.docs_read) == (
        two.train_tokens,
        two.val_tokens,
        two.docs_read,
    )
    a, b = open_store(one.path), open_store(two.path)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)


def test_budgets_are_exact_and_stop_reading_early(tmp_path):
    docs = make_docs(400)
    src = str(write_sources(tmp_path / "src", docs)["jsonl"])
    seen: list = []
    res = shard(
        "en", tmp_path / "b.zarr", source=src, train_tokens=5000, val_tokens=1000,
        progress=seen.append,
    )  # fmt: skip
    assert (res.train_tokens, res.val_tokens) == (5000, 1000)
    assert res.docs_read < 200  # streaming: the rest of the source is never read
    assert seen and seen[-1].tokens == 6000 and seen[-1].total_tokens == 6000
    store = open_store(res.path)
    assert not set(split_docs(store, "train")) & set(split_docs(store, "val"))
    only_train = shard("en", tmp_path / "t.zarr", source=src, train_tokens=20_000)
    assert only_train.train_tokens == 20_000 and 0 < only_train.val_tokens < 20_000 / 3
    only_val = shard("en", tmp_path / "v.zarr", source=src, val_tokens=3000)
    total = sum(len(d.encode()) + 1 for d in docs)
    assert only_val.val_tokens == 3000 and only_val.docs_read == 400
    assert only_val.train_tokens + 3000 < total  # the cut rest of the last val document is dropped


# -------------------------------------------------------------------------------- bad inputs


def test_bad_sources_get_one_line_exit_2_and_write_nothing(monkeypatch, capsys, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "empty.txt").write_text("\n \n\n")
    (src / "bad.jsonl").write_text('{"text": "ok"}\n{"text": "half\n')
    (src / "notext.jsonl").write_text('{"body": "no text field"}\n')
    pq.write_table(pa.table({"body": ["x"]}), src / "notext.parquet")
    (src / "corrupt.txt.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    (src / "latin1.txt").write_bytes("café crème".encode("latin-1"))
    (src / "data.csv").write_text("text\nhello\n")
    (src / "emptydir").mkdir()
    small = src / "small.txt"
    small.write_text("one short document\n\nand another\n")
    out = tmp_path / "out" / "en.zarr"
    cases = [
        (["--source", src / "empty.txt"], ["no documents"]),
        (["--source", src / "bad.jsonl"], ["bad.jsonl:2", "not a JSON object"]),
        (["--source", src / "notext.jsonl"], ["notext.jsonl:1", "'text'"]),
        (["--source", src / "notext.parquet"], ["no 'text' column", "body"]),
        (["--source", src / "corrupt.txt.gz"], ["cannot read", "corrupt.txt.gz"]),
        (["--source", src / "latin1.txt"], ["not UTF-8"]),
        (["--source", src / "data.csv"], ["unsupported file type"]),
        (["--source", src / "emptydir"], ["has no .txt, .jsonl, .parquet"]),
        (["--source", src / "missing.txt"], ["does not exist"]),
        (["--lang", "xx"], ["no language 'xx'", "vi"]),
        (["--tokenizer", "gpt9"], ["unknown tokenizer 'gpt9'", "qwen3"]),
        (["--source", small, "--val-tokens", "500"], ["500 val tokens", "only 31 tokens"]),
        (["--source", small, "--train-tokens", "10", "--val-tokens", "500"], ["only 31 tokens"]),
        (["--workers", "0"], ["--workers"]),
        (["--train-tokens", "0"], ["--train-tokens must be positive"]),
    ]
    for extra, fragments in cases:
        args = ["shard", "--lang", "en", "--out", out, *extra]
        if "--lang" in extra:
            args = ["shard", "--out", out, *extra]
        assert_bad_input(cli(monkeypatch, capsys, *args), *fragments)
        assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir()), extra


def test_existing_output_needs_force_and_survives_a_failed_overwrite(monkeypatch, capsys, tmp_path):
    out = tmp_path / "vi.zarr"
    first = shard("vi", out)
    before = np.asarray(open_store(out).train).copy()
    assert_bad_input(cli(monkeypatch, capsys, "shard", "--lang", "vi", "--out", out), "--force")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    proc = cli(
        monkeypatch, capsys, "shard", "--lang", "vi", "--out", out, "--source", bad, "--force"
    )
    assert_bad_input(proc, "not a JSON object")
    assert np.array_equal(open_store(out).train, before)  # the old store is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "vi.zarr"]
    again = shard("vi", out, seed=1, force=True)
    assert again.val_docs >= 1 and first.docs_read == again.docs_read


def test_a_killed_shard_never_leaves_a_store(tmp_path):
    fifo = tmp_path / "stream.txt"
    os.mkfifo(fifo)
    out = tmp_path / "data" / "en.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "plc", "shard", "--lang", "en", "--source", fifo, "--out", out],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = tmp_path / "data" / ".en.zarr.partial"
    with open(fifo, "w") as w:  # blocks until plc opens the stream
        w.write("a first document\n\n" * 1000)
        w.flush()
        deadline = time.time() + 60
        while not partial.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert partial.exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists()
    with pytest.raises(PlcError, match="no token store"):
        open_store(out)
    assert_bad_input(run_plc("data", "info", out), "no token store")
    res = shard("en", out)  # a rerun needs no --force and replaces the leftover
    assert open_store(res.path).attrs["train_docs"] == res.train_docs
    assert not partial.exists()


# ----------------------------------------------------------------------- store and sampling


def arange_store(path: Path, n_train: int, n_val: int = 5000, offset: int = 0):
    train = (np.arange(n_train) + offset).astype(np.uint32)
    val = (np.arange(n_val) + 10_000_000).astype(np.uint32)
    write_store(path, train, val, lang="en", tokenizer=BYTE)
    return open_store(path)


def test_sampler_is_deterministic_per_seed_and_task(tmp_path):
    store = arange_store(tmp_path / "a.zarr", 100_000)
    sampler = BatchSampler([store], 64, 8, seed=3, task_index=2)
    b = sampler.batch(5)
    assert b.shape == (8, 65) and b.dtype == np.int64
    assert np.array_equal(b, BatchSampler([store], 64, 8, seed=3, task_index=2).batch(5))
    assert not np.array_equal(b, BatchSampler([store], 64, 8, seed=3, task_index=3).batch(5))
    assert not np.array_equal(b, BatchSampler([store], 64, 8, seed=4, task_index=2).batch(5))
    assert not np.array_equal(b, sampler.batch(6))
    # Every row is a contiguous window of train.
    assert (np.diff(b, axis=1) == 1).all() and b.min() >= 0 and b.max() < 100_000
    starts, w = eval_windows(store, 10, 99, seed=0)
    assert np.array_equal(w, starts[:, None] + np.arange(100) + 10_000_000)  # val[s : s + 100]
    with pytest.raises(PlcError, match="room for"):
        eval_windows(store, 60, 99, seed=0)


def test_mixture_weights_pick_the_languages(tmp_path):
    a = arange_store(tmp_path / "a.zarr", 50_000)
    b = arange_store(tmp_path / "b.zarr", 50_000, offset=1_000_000)
    only_b = BatchSampler([a, b], 32, 64, seed=0, task_index=1, weights=[0, 1]).batch(0)
    assert (only_b >= 1_000_000).all()
    mixed = BatchSampler([a, b], 32, 400, seed=0, task_index=1, weights=[1, 3]).batch(0)
    share_b = (mixed[:, 0] >= 1_000_000).mean()
    assert 0.65 < share_b < 0.85
    with pytest.raises(PlcError, match="weights"):
        BatchSampler([a, b], 32, 4, seed=0, task_index=1, weights=[1])


def test_large_splits_are_read_from_their_files_like_in_memory(tmp_path, monkeypatch):
    n = 2 * tokenstore.CHUNK_TOKENS + 12_345
    train = np.arange(n, dtype=np.uint32)
    train[tokenstore.CHUNK_TOKENS : 2 * tokenstore.CHUNK_TOKENS] = 0  # a chunk of fill values
    write_store(tmp_path / "big.zarr", train, train[:300_000], lang="en", tokenizer=BYTE)
    memory = open_store(tmp_path / "big.zarr")
    monkeypatch.setattr(tokenstore, "IN_MEMORY_BYTES", 0)
    raw = open_store(tmp_path / "big.zarr")
    assert isinstance(raw.train, ShardedTokens) and isinstance(memory.train, np.ndarray)
    edge = tokenstore.CHUNK_TOKENS
    assert np.array_equal(raw.train[edge - 50 : edge + 50], train[edge - 50 : edge + 50])
    assert np.array_equal(raw.train[n - 10 :], train[n - 10 :]) and len(raw.train) == n
    for seq_len in (256, 2048):
        s_mem = BatchSampler([memory], seq_len, 32, seed=1, task_index=1)
        s_raw = BatchSampler([raw], seq_len, 32, seed=1, task_index=1)
        for step in range(5):
            assert np.array_equal(s_mem.batch(step), s_raw.batch(step))
    for a, b in zip(eval_windows(raw, 30, 2047, 0), eval_windows(memory, 30, 2047, 0), strict=True):
        assert np.array_equal(a, b)
    assert describe_store(tmp_path / "big.zarr").train_tokens == n


@needs_qwen
def test_store_info_without_the_tokenizer_shows_ids(monkeypatch, tmp_path):
    res = shard("en", tmp_path / "q.zarr", tokenizer="qwen3")
    info = describe_store(res.path, 8)
    assert info.sample_text == get_tokenizer("qwen3").decode(info.sample_ids)
    monkeypatch.setattr(tokenizers, "qwen_vocab_file", lambda: None)
    info = describe_store(res.path, 8)
    assert info.sample_text is None and "dashscope" in info.sample_note
    assert len(info.sample_ids) == 8 and info.train_tokens == res.train_tokens


@pytest.mark.slow
def test_memory_stays_bounded_on_a_large_source(tmp_path):
    """96 MB of text → 96 M byte tokens (384 MB as uint32): peak memory stays far below that."""
    docs = "\n\n".join(d for lang in LANGS for d in open_source("embedded", lang).documents())
    src = tmp_path / "big.txt"
    with open(src, "w", encoding="utf-8") as f:
        for _ in range(96_000_000 // len(docs.encode())):
            f.write(docs + "\n\n")
    # Peak RSS from VmHWM: ru_maxrss would carry over the high-water mark of this forking process.
    code = (
        "import re; from plc.data.shard import shard;"
        f"r = shard('en', {str(tmp_path / 'big.zarr')!r}, source={str(src)!r});"
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1);"
        "print(r.train_tokens + r.val_tokens, hwm)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    tokens, peak_kb = map(int, out.stdout.split())
    assert tokens > 90_000_000
    assert peak_kb < 250_000, peak_kb  # KiB; holding the tokens would need > 360 MiB
