"""The learning-rate search of App. A: each size's best rate on a grid, and Table II's power law.

The paper trained the smallest and the largest model on English at each rate of a grid, took the
rate with the lowest final validation loss (the mean of the last 10 validations), and gave every
size in between η(d) = η_S · (d_S / d)^α with α = log(η_L / η_S) / log(d_S / d_L) between the two
winners (S smallest, L largest hidden size): 3e-3 at d = 320 and 1e-3 at d = 1280 give
α = 0.79248 and the rates of Table II.

Input: train metric files whose rows carry validations (`val_loss`, by `step`), one run per rate
(its peak rate is the `peak_lr` column, else the largest scheduled `lr`: warm-up then constant);
or a CSV grid table with columns d_model, lr, final_loss (and optionally size).

A run whose train metric file records that it diverged (`status` "diverged": no checkpoint, no
final loss) makes its rate at its size a diverged rate: reported, and left out of the fit. Its
peak rate is read from `peak_lr`, else from the run id a plan gives it (`nano-s0-lr0.003`), as a
run that diverged in its warm-up never reached it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plc.errors import PlcError
from plc.sizes import SHAPES
from plc.store import diverged, expand_inputs, read_metrics

if TYPE_CHECKING:
    import polars as pl

LAST_VALIDATIONS = 10  # App. A: the final loss is the mean of the last 10 validation losses
SAME_RATE = 5e-3  # a grid rate within 0.5 % of an interpolated one counts as that rate
TABLE_COLUMNS = ("d_model", "lr", "final_loss")
RATE_TAG = re.compile(
    r"(?:^|-)lr(\d[\d.]*(?:e[-+]?\d+)?)(?=-|$)"
)  # a plan's run id: nano-s0-lr0.003


@dataclass
class GridPoint:
    """One rate tried at one size: its final validation loss."""

    size: str
    d_model: int
    lr: float
    final_loss: float
    validations: int | None  # averaged into final_loss (None: given by a table)
    runs: int  # runs at this size and rate, their final losses averaged


@dataclass
class DivergedRate:
    """A rate at which training diverged at one size: no final loss, left out of the fit."""

    size: str
    d_model: int
    lr: float
    runs: int  # runs at this size and rate that diverged
    step: int | None  # the last step the first of them recorded (None: it recorded no step)


@dataclass
class LrRow:
    """One row of Table II: the interpolated rate of a size and the grid's winner there."""

    size: str
    d_model: int
    lr: float
    loss: float | None  # final loss of a grid run at the interpolated rate, where one was run
    grid_lr: float | None  # the best rate of the grid at this size, where a grid was run
    grid_loss: float | None


@dataclass
class LrFitResult:
    alpha: float
    small: GridPoint  # the winner at the smallest d_model
    large: GridPoint  # the winner at the largest d_model
    law: str
    rows: list[LrRow]
    winners: list[GridPoint]
    grid: list[GridPoint] = field(default_factory=list)
    diverged: list[DivergedRate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def power_law_alpha(d_small: float, lr_small: float, d_large: float, lr_large: float) -> float:
    """α = log(η_L / η_S) / log(d_S / d_L) (App. A)."""
    return math.log(lr_large / lr_small) / math.log(d_small / d_large)


def interpolate(d_model: float, small: GridPoint, alpha: float) -> float:
    """η(d) = η_S · (d_S / d)^α."""
    return small.lr * (small.d_model / d_model) ** alpha


def format_rate(lr: float) -> str:
    """A learning rate as short scientific notation: 3e-3, 2.296e-3."""
    mantissa, exponent = f"{lr:.3e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def d_model_of(size: str) -> int | None:
    """The hidden size a size name implies: a preset's, or the d of an `L<layers>-d<d>` name."""
    if size in SHAPES:
        return SHAPES[size][1]
    match = re.fullmatch(r"L\d+-d(\d+)", size)
    return int(match.group(1)) if match else None


def _size_of(d_model: int) -> str:
    return next((name for name, shape in SHAPES.items() if shape[1] == d_model), f"d{d_model}")


def _grid_from_table(path: Path) -> list[GridPoint]:
    import polars as pl

    try:
        df = pl.read_csv(path)
    except Exception as e:
        raise PlcError(f"{path} is not a readable CSV ({type(e).__name__})") from e
    missing = [c for c in TABLE_COLUMNS if c not in df.columns]
    if missing:
        raise PlcError(f"{path} lacks columns {missing} (a grid table has d_model, lr, final_loss)")
    try:
        rows = df.select(
            pl.col("d_model").cast(pl.Int64),
            pl.col("lr").cast(pl.Float64),
            pl.col("final_loss").cast(pl.Float64),
            (pl.col("size").cast(pl.String) if "size" in df.columns else pl.lit(None)).alias(
                "size"
            ),
        )
    except Exception as e:
        raise PlcError(f"{path}: d_model, lr and final_loss must be numbers") from e
    return [
        GridPoint(
            r["size"] or _size_of(r["d_model"]), r["d_model"], r["lr"], r["final_loss"], None, 1
        )
        for r in rows.iter_rows(named=True)
    ]


def _grid_from_metrics(paths: Sequence[Path]) -> tuple[list[GridPoint], list[DivergedRate]]:
    import polars as pl

    df = read_metrics(paths)
    if df.height:
        df = df.filter(~pl.col("kind").is_in(["probe", "diagnose"]))
    if df.height == 0 or "val_loss" not in df.columns and not diverged(df):
        raise PlcError(
            "no validation rows (val_loss) in the input metric files; "
            "run the grid's train-task with --val-every"
        )
    for name, dtype in (("d_model", pl.Int64), ("peak_lr", pl.Float64), ("val_loss", pl.Float64)):
        if name not in df.columns:
            df = df.with_columns(pl.lit(None, dtype).alias(name))
    runs, failed = [], []
    for (run_id,), rows in df.group_by("run_id", maintain_order=True):
        size = str(rows["size"][0] or "")
        d = rows["d_model"].drop_nulls()
        d_model = int(d[0]) if d.len() else d_model_of(size)
        if d_model is None:
            raise PlcError(
                f"run {run_id}: cannot tell d_model of size {size!r}; add a d_model column"
            )
        lr = _peak_rate(str(run_id), rows, diverged(rows))
        if diverged(rows):
            steps = rows["step"].drop_nulls()
            failed.append((size, d_model, lr, int(steps.max()) if steps.len() else None))
            continue
        val = rows.filter(pl.col("val_loss").is_not_null()).sort("step")
        if val.height == 0:
            raise PlcError(
                f"run {run_id} has no validation rows (val_loss); train it with --val-every"
            )
        final = float(val["val_loss"].tail(LAST_VALIDATIONS).mean())
        runs.append((size, d_model, lr, final, min(LAST_VALIDATIONS, val.height)))
    bad: dict[tuple[int, float], list] = {}
    for size, d_model, lr, step in failed:
        bad.setdefault((d_model, lr), []).append((size, step))
    points: dict[tuple[int, float], list] = {}
    for size, d_model, lr, final, n in runs:
        if (d_model, lr) not in bad:  # a rate that diverged once is not a candidate
            points.setdefault((d_model, lr), []).append((size, final, n))
    grid = [
        GridPoint(
            group[0][0],
            d_model,
            lr,
            sum(f for _, f, _ in group) / len(group),
            min(n for _, _, n in group),
            len(group),
        )
        for (d_model, lr), group in points.items()
    ]
    out = [
        DivergedRate(group[0][0], d_model, lr, len(group), group[0][1])
        for (d_model, lr), group in bad.items()
    ]
    return grid, out


def _peak_rate(run_id: str, rows: pl.DataFrame, diverged: bool) -> float:
    """A run's peak learning rate: `peak_lr`; for a run that diverged (perhaps in its warm-up,
    below its peak) the rate its plan's run id names; else the largest scheduled `lr`."""
    peak = rows["peak_lr"].drop_nulls()
    if peak.len():
        return float(peak[0])
    tag = RATE_TAG.search(run_id)
    if diverged and tag:
        return float(tag.group(1))
    scheduled = rows["lr"].drop_nulls() if "lr" in rows.columns else []
    if not len(scheduled):
        raise PlcError(f"run {run_id} has no learning rate (lr or peak_lr column)")
    return float(scheduled.max())


def read_grid(inputs: Iterable[str | Path]) -> tuple[list[GridPoint], list[DivergedRate]]:
    """Grid results from train metric files and/or CSV grid tables, sorted by d_model and rate,
    and the rates that diverged."""
    paths = expand_inputs(inputs)
    tables = [p for p in paths if p.suffix.lower() == ".csv"]
    metrics = [p for p in paths if p.suffix.lower() != ".csv"]
    grid = [g for t in tables for g in _grid_from_table(t)]
    failed: list[DivergedRate] = []
    if metrics:
        finished, failed = _grid_from_metrics(metrics)
        grid += finished
    bad = [g for g in [*grid, *failed] if g.lr <= 0 or g.d_model <= 0]
    if bad:
        raise PlcError(f"learning rates and d_model must be positive (size {bad[0].size})")
    return (
        sorted(grid, key=lambda g: (g.d_model, g.lr)),
        sorted(failed, key=lambda g: (g.d_model, g.lr)),
    )


def _parse_at(at: Sequence[str]) -> list[int]:
    out = []
    for item in at:
        d = d_model_of(item) if not item.isdigit() else int(item)
        if d is None or d <= 0:
            raise PlcError(f"--at {item!r} is neither a size preset nor a positive d_model")
        out.append(d)
    return out


def fit_lr(inputs: Iterable[str | Path], at: Sequence[str] = ()) -> LrFitResult:
    """`plc fit-lr`: the best rate per size, α between the smallest and largest d_model, and the
    interpolated rate at every preset between them (or at the sizes `at`), beside the grid's winners."""
    grid, failed = read_grid(inputs)
    winners: dict[int, GridPoint] = {}
    for g in grid:  # sorted by rate: the smaller rate wins a tie
        if g.d_model not in winners or g.final_loss < winners[g.d_model].final_loss:
            winners[g.d_model] = g
    if len(winners) < 2:
        got = ", ".join(f"d_model {d}" for d in winners) or "none"
        lost = sorted({g.d_model for g in failed} - set(winners))
        why = "".join(f"; every rate at d_model {d} diverged" for d in lost)
        raise PlcError(
            f"the learning-rate law needs grid results at two model sizes at least; got {got}{why}"
        )
    small, large = winners[min(winners)], winners[max(winners)]
    alpha = power_law_alpha(small.d_model, small.lr, large.d_model, large.lr)
    wanted = _parse_at(at) or [
        shape[1] for shape in SHAPES.values() if small.d_model <= shape[1] <= large.d_model
    ]
    rows = []
    for d in sorted(set(wanted) | set(winners)):
        lr = interpolate(d, small, alpha)
        same = [g for g in grid if g.d_model == d and abs(g.lr / lr - 1) <= SAME_RATE]
        win = winners.get(d)
        rows.append(
            LrRow(
                size=win.size if win else _size_of(d),
                d_model=d,
                lr=lr,
                loss=same[0].final_loss if same else None,
                grid_lr=win.lr if win else None,
                grid_loss=win.final_loss if win else None,
            )
        )
    law = f"η = {format_rate(small.lr)}·({small.d_model}/d)^{alpha:.5f}"
    ordered = sorted(winners.values(), key=lambda g: g.d_model)
    return LrFitResult(alpha, small, large, law, rows, ordered, grid, failed)
