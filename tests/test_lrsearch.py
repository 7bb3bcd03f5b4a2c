"""plc.lrsearch and `plc fit-lr`: App. A's learning-rate search and the rates of Table II."""

from __future__ import annotations

import json
import math
import re

import pytest
from conftest import assert_bad_input, run_plc

from plc.errors import PlcError
from plc.lrsearch import LAST_VALIDATIONS, fit_lr, format_rate, power_law_alpha
from plc.sizes import PAPER_SIZES, SHAPES, paper_lr
from plc.store import metric_path, write_metrics

# Table II's interpolation column, η × 10³, for the paper's eight sizes.
TABLE_II = {"5M": "3.00", "12M": "2.30", "27M": "1.88", "39M": "1.73", "53M": "1.61"}
TABLE_II |= {"83M": "1.41", "106M": "1.33", "314M": "1.00"}


@pytest.fixture
def winners(tmp_path):
    path = tmp_path / "winners.csv"
    path.write_text("size,d_model,lr,final_loss\n5M,320,3e-3,3.9941\n314M,1280,1e-3,3.2575\n")
    return path


def test_the_paper_winners_give_alpha_and_every_rate_of_table_ii(winners):
    proc = run_plc("fit-lr", winners)
    assert proc.returncode == 0, proc.stderr
    assert "α = log(η_L/η_S)/log(d_S/d_L) = 0.79248" in proc.stdout
    printed = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line) if c.strip()]
        if cells and cells[0] in TABLE_II:
            printed[cells[0]] = cells[2]
    assert printed == TABLE_II
    res = fit_lr([winners])
    assert res.alpha == pytest.approx(math.log(1 / 3) / math.log(1 / 4))
    assert [r.size for r in res.rows] == PAPER_SIZES
    # The same rates plc trains with (plc.sizes.paper_lr) and the grid winners at both ends only.
    assert [r.lr for r in res.rows] == pytest.approx([paper_lr(SHAPES[s][1]) for s in PAPER_SIZES])
    assert [r.grid_lr for r in res.rows] == [3e-3] + [None] * 6 + [1e-3]
    assert res.rows[0].loss == 3.9941 and res.rows[1].loss is None
    assert res.law == "η = 3e-3·(320/d)^0.79248"


def test_fit_lr_json_and_chosen_sizes(winners):
    proc = run_plc("fit-lr", winners, "--at", "12M,600", "--json")
    got = json.loads(proc.stdout)
    assert [r["d_model"] for r in got["rows"]] == [320, 448, 600, 1280]
    assert got["rows"][2]["size"] == "d600"
    assert got["rows"][2]["lr"] == pytest.approx(3e-3 * (320 / 600) ** got["alpha"])


def write_grid_run(folder, run_id, size, lr, val_losses, warmup=4):
    """A train metric file of one grid run: warm-up then constant lr, validations every 10 steps."""
    rows = []
    for step in range(10 * len(val_losses)):
        val = val_losses[step // 10] if step % 10 == 9 else None
        rows.append(
            {
                "kind": "train",
                "run_id": run_id,
                "size": size,
                "n_params": 1,
                "task_index": 1,
                "cycle": 1,
                "lang": "en",
                "step": step,
                "loss": 3.0,
                "lr": lr * min(1.0, (step + 1) / warmup),
                "val_loss": val,
            }
        )
    write_metrics(metric_path(folder, "train", run_id, 1, "en"), rows)


def test_best_rate_per_size_from_validation_rows(tmp_path):
    # At each size the rate that is best early is not the one with the best last 10 validations.
    for size in ("nano", "micro"):
        for lr, early, late in ((1e-3, 2.0, 3.1), (3e-3, 2.5, 3.0), (1e-2, 2.2, 3.2)):
            if size == "micro" and lr == 3e-3:
                late = 3.3  # micro's best is 1e-3
            losses = [early] * 5 + [late] * LAST_VALIDATIONS
            write_grid_run(tmp_path, f"{size}-{lr:g}", size, lr, losses)
    res = fit_lr([str(tmp_path / "*.parquet")])
    assert [(w.size, w.d_model, w.lr, w.validations) for w in res.winners] == [
        ("nano", 64, 3e-3, LAST_VALIDATIONS),
        ("micro", 128, 1e-3, LAST_VALIDATIONS),
    ]
    assert res.winners[0].final_loss == pytest.approx(3.0)
    assert res.alpha == pytest.approx(power_law_alpha(64, 3e-3, 128, 1e-3))
    assert res.alpha == pytest.approx(math.log(3) / math.log(2))
    assert len(res.grid) == 6 and [r.d_model for r in res.rows] == [64, 128]


def test_fewer_than_two_sizes_is_bad_input(tmp_path, winners):
    one = tmp_path / "one.csv"
    one.write_text("d_model,lr,final_loss\n320,3e-3,3.99\n320,1e-3,4.1\n")
    assert_bad_input(run_plc("fit-lr", one), "two model sizes", "d_model 320")
    no_val = tmp_path / "noval"
    write_metrics(
        metric_path(no_val, "train", "r", 1, "en"),
        [
            {"kind": "train", "run_id": "r", "size": "nano", "n_params": 1, "task_index": 1}
            | {"cycle": 1, "lang": "en", "step": 0, "loss": 3.0, "lr": 1e-3}
        ],
    )
    assert_bad_input(run_plc("fit-lr", *no_val.glob("*.parquet")), "no validation rows")
    bad = tmp_path / "bad.csv"
    bad.write_text("d_model,rate\n320,3e-3\n")
    with pytest.raises(PlcError, match="lacks columns"):
        fit_lr([bad])
    with pytest.raises(PlcError, match="--at 'huge'"):
        fit_lr([winners], at=["huge"])


def test_format_rate():
    assert [format_rate(x) for x in (3e-3, 2.2962e-3, 5e-4)] == ["3e-3", "2.296e-3", "5e-4"]
