"""Table III: the probe's AUC after one task of each language, trained from initialisation.

App. B chose which languages to probe after from this table: a probe's AUC depends on the language
trained just before it, and languages that transfer alike give a smoother series. `plc plan
transfer` writes the runs (from c0, one task of each language, then a probe); `transfer_table`
reads their probe files and returns the table: one row per pretraining language, one column per
model size (the mean over seeds where there are several), the average row, and the from-scratch
probe's AUC for reference. It writes the table (.csv, .parquet) or a figure (.png, .svg, .pdf) of
each language's AUC relative to its size's average.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from plc.errors import PlcError
from plc.protocol import CYCLE
from plc.store import atomic_path, check_output, expand_inputs, read_metrics

TABLES = (".csv", ".parquet")
FIGURES = (".png", ".svg", ".pdf")


@dataclass
class TransferResult:
    probe_lang: str
    langs: list[str]  # the rows: pretraining languages, the paper's cycle order first
    sizes: list[str]  # the columns, by parameter count
    n_params: list[int]
    auc: list[list[float | None]]  # auc[row][column]: mean over the seeds of that size
    average: list[float]  # per size: the mean over its languages (Table III's last row)
    scratch: list[float | None]  # per size: the probe of the untrained model
    seeds: list[int]  # per size: runs averaged
    out: str | None

    def rows(self) -> list[dict[str, float | str | None]]:
        """The table as rows: languages, then `average` and `scratch`."""
        named = [*zip(self.langs, self.auc, strict=True), ("average", self.average)]
        if any(v is not None for v in self.scratch):
            named.append(("scratch", self.scratch))
        return [
            {"lang": name, **dict(zip(self.sizes, values, strict=True))} for name, values in named
        ]


def transfer_table(
    inputs: Iterable[str | os.PathLike],
    *,
    out: str | os.PathLike | None = None,
    force: bool = False,
) -> TransferResult:
    """Table III from probe metric files of one-task checkpoints (and from-scratch probes).

    Probes of later checkpoints (task index above 1) are not part of the table and are left out;
    one probe language throughout. `out` by suffix: a table (.csv, .parquet) or a figure.
    """
    import polars as pl

    if out is not None:
        out = Path(out)
        if out.suffix.lower() not in TABLES + FIGURES:
            raise PlcError(f"--out must end in {', '.join(TABLES + FIGURES)} (got {out.name})")
        check_output(out, force)
    paths = [p for p in expand_inputs(inputs) if p.suffix == ".parquet"]
    df = read_metrics(paths, "probe") if paths else pl.DataFrame()
    if df.height == 0:
        raise PlcError("no probe rows in the inputs; run the transfer plan's probes first")
    if "from_scratch" not in df.columns:
        df = df.with_columns(pl.lit(False).alias("from_scratch"))
    df = df.with_columns(pl.col("from_scratch").fill_null(False)).filter(pl.col("task_index") <= 1)
    one_task = df.filter(~pl.col("from_scratch") & (pl.col("task_index") == 1))
    if one_task.height == 0:
        raise PlcError(
            "no probes of one-task checkpoints (task 1) in the inputs: a transfer table needs "
            "`plc plan transfer`'s probes"
        )
    langs_probed = sorted(set(df["probe_lang"].drop_nulls().to_list()))
    if len(langs_probed) != 1:
        raise PlcError(
            f"the probes are on {', '.join(langs_probed) or 'no language'}: a transfer table "
            "compares probes on one language"
        )
    # A probe file repeats its AUC on every evaluation row: one AUC per run and language first
    # (probe repeats averaged), then the mean over the runs (seeds) of a size.
    per_run = df.group_by("run_id", "size", "n_params", "lang", "from_scratch").agg(
        pl.col("auc").mean()
    )
    per_size = per_run.group_by("size", "n_params", "lang", "from_scratch").agg(
        pl.col("auc").mean(), pl.col("run_id").n_unique().alias("runs")
    )
    sizes = per_size.select("size", "n_params").unique().sort("n_params", "size").rows()
    trained = per_size.filter(~pl.col("from_scratch"))
    present = set(trained["lang"].to_list())
    langs = [x for x in CYCLE if x in present] + sorted(present - set(CYCLE))
    cell = {(r["size"], r["lang"]): r["auc"] for r in trained.iter_rows(named=True)}
    scratch = {
        r["size"]: r["auc"] for r in per_size.filter(pl.col("from_scratch")).iter_rows(named=True)
    }
    runs = {size: int(trained.filter(pl.col("size") == size)["runs"].max()) for size, _ in sizes}
    auc = [[cell.get((size, lang)) for size, _ in sizes] for lang in langs]
    average = []
    for j in range(len(sizes)):
        values = [row[j] for row in auc if row[j] is not None]
        average.append(sum(values) / len(values) if values else float("nan"))
    res = TransferResult(
        probe_lang=langs_probed[0],
        langs=langs,
        sizes=[s for s, _ in sizes],
        n_params=[int(n) for _, n in sizes],
        auc=auc,
        average=average,
        scratch=[scratch.get(s) for s, _ in sizes],
        seeds=[runs[s] for s, _ in sizes],
        out=None if out is None else str(out),
    )
    if out is None:
        return res
    with atomic_path(out, force) as tmp:
        if out.suffix.lower() in TABLES:
            table = pl.DataFrame(
                res.rows(), schema={"lang": pl.String, **dict.fromkeys(res.sizes, pl.Float64)}
            )
            if out.suffix.lower() == ".csv":
                table.write_csv(tmp)
            else:
                table.write_parquet(tmp)
        else:
            _figure(res).savefig(tmp, format=out.suffix.lower().lstrip("."), dpi=150)
    return res


def _figure(res: TransferResult):
    """Grouped bars: each language's AUC in % of its size's average (sizes side by side)."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.0 + 0.9 * len(res.langs), 4.0), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(res.langs))
    width = 0.8 / len(res.sizes)
    for j, size in enumerate(res.sizes):
        rel = [
            np.nan if row[j] is None else 100.0 * (row[j] / res.average[j] - 1.0) for row in res.auc
        ]
        ax.bar(x + (j - (len(res.sizes) - 1) / 2) * width, rel, width, label=size)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(x, res.langs)
    ax.set_xlabel("pretraining language (one task from initialisation)")
    ax.set_ylabel(f"probe AUC on {res.probe_lang}: % vs the size's average")
    ax.set_title("Transfer to the probe language (Table III)")
    ax.legend(title="size")
    return fig
