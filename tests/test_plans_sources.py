"""A budgeted shard of a Hugging Face dataset samples across it, not its first files (seeded)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plc.data.shard import shard
from plc.data.sources import open_source
from plc.data.tokenstore import open_store

PARTS, DOCS = 10, 20


def many_files(root):
    """A local dataset of PARTS parquet files, document i of part p reading `p<p> d<i> …`."""
    repo = root / "ds"
    (repo / "vi").mkdir(parents=True)
    for part in range(PARTS):
        texts = [f"p{part} d{i} " + "lorem " * 20 for i in range(DOCS)]
        pq.write_table(pa.table({"text": texts}), repo / "vi" / f"vi_part_{part:05d}.parquet")
    (repo / "README.md").write_text(
        '---\nconfigs:\n- config_name: vi\n  data_files: "vi/*.parquet"\n---\n'
    )
    return repo


def parts_of(store_path):
    from plc.data.tokenizers import get_tokenizer

    tok = get_tokenizer("byte")
    ids = open_store(store_path).train[:].tolist()
    text = tok.decode([t for t in ids if t != tok.eos_id])
    return {int(w[1:]) for w in text.split() if w.startswith("p") and w[1:].isdigit()}


@pytest.mark.slow  # `datasets` streams: ~10 s each on a busy 2-core machine
def test_the_stream_is_a_seeded_permutation_of_the_whole_dataset(tmp_path):
    repo = many_files(tmp_path)
    head = [f"p{p} d{i}" for p in range(PARTS) for i in range(DOCS)]
    docs = [" ".join(d.split()[:2]) for d in open_source(f"hf:{repo}:vi", "vi", 0).documents()]
    assert sorted(docs) == sorted(head) and docs != head
    again = [" ".join(d.split()[:2]) for d in open_source(f"hf:{repo}:vi", "vi", 0).documents()]
    other = [" ".join(d.split()[:2]) for d in open_source(f"hf:{repo}:vi", "vi", 1).documents()]
    assert again == docs and other != docs


@pytest.mark.slow
def test_a_budget_samples_documents_from_across_the_files(tmp_path):
    repo = many_files(tmp_path)
    # Less than one file (~127 tokens a document): read in order it would all be the first file.
    budget = DOCS * 100
    a = shard("vi", tmp_path / "a.zarr", source=f"hf:{repo}:vi", train_tokens=budget, seed=0)
    assert a.train_tokens == budget
    assert len(parts_of(a.path)) >= 4
    b = shard("vi", tmp_path / "b.zarr", source=f"hf:{repo}:vi", train_tokens=budget, seed=0)
    assert open_store(b.path).train[:].tolist() == open_store(a.path).train[:].tolist()
