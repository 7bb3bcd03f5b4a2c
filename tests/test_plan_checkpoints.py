"""plc plan checkpoints: plasticity along a model suite's pretraining revisions (issue 32), and
the continual protocol from one revision; the slow test runs a suite of tiny local models
(three sizes × five revisions as folders) under make -j2 to its onset table and figures."""

from __future__ import annotations

import shutil
import subprocess
import sys

import polars as pl
import pytest
from conftest import assert_bad_input, cli

from plc.errors import PlcError
from plc.plan import build_plan
from plc.plan.jobs import INPUTS
from plc.plan.make import render_makefile

PYTHIA = ["EleutherAI/pythia-70m", "EleutherAI/pythia-160m", "EleutherAI/pythia-410m"]
REVISIONS = ["step1000", "step2000", "step4000"]


def _arg(job, flag):
    return job.argv[job.argv.index(flag) + 1] if flag in job.argv else None


def test_every_revision_of_every_model_is_a_point_of_its_pretraining_probed_and_diagnosed():
    plan = build_plan("checkpoints", models=PYTHIA, revisions=REVISIONS, preset="paper")
    assert plan.kind == "checkpoints" and plan.sizes == ["pythia-70m", "pythia-160m", "pythia-410m"]
    assert [r.run_id for r in plan.runs] == [f"{m.split('/')[1]}-s0" for m in PYTHIA]
    inits = [j for j in plan.jobs if j.command == "init"]
    assert [_arg(j, "--from") for j in inits] == [f"hf:{m}@{r}" for m in PYTHIA for r in REVISIONS]
    assert all("--along-pretraining" in j.argv for j in inits)
    assert {_arg(j, "--tokens-per-step") for j in inits} == {"2097152"}  # Pythia's, known
    assert [j.task for j in inits] == [1000, 2000, 4000] * 3 and not any(j.inputs for j in inits)
    probes = [j for j in plan.jobs if j.command == "probe"]
    # Every revision probed, its metric file named by its step; one from-scratch probe per model.
    assert sorted(j.output.rsplit("/", 1)[1] for j in probes if "--from-scratch" not in j.argv)[
        :3
    ] == [f"probe-pythia-160m-s0-t{s}-pretrain-vi.parquet" for s in (1000, 2000, 4000)]
    assert sum("--from-scratch" in j.argv for j in probes) == 3 and len(probes) == 12
    assert len([j for j in plan.jobs if j.command == "diagnose"]) == 9
    # The stores: the probe language and entropy's, sharded with the suite's tokenizer.
    shards = [j for j in plan.jobs if j.command == "shard"]
    assert [_arg(j, "--lang") for j in shards] == ["vi", "ru"]
    assert {_arg(j, "--tokenizer") for j in shards} == {f"hf:{PYTHIA[0]}@step1000"}
    assert plan.tokenizer == f"hf:{PYTHIA[0]}@step1000" and plan.n_tasks == 0
    # The analysis: the onset along pretraining fitted against size, figures over tokens.
    fit = next(j for j in plan.jobs if j.command == "fit-onset")
    assert _arg(fit, "--probe-after") == "pretrain" and _arg(fit, "--model") == "all"
    assert INPUTS in fit.argv and len(fit.inputs) == 12 + 9
    auc = next(j for j in plan.jobs if j.output.endswith("figures/auc.png"))
    assert _arg(auc, "--x") == "tokens"
    assert plan.probe_after == ("pretrain",)
    render_makefile(plan)  # every path a Makefile can carry
    # The onset along pretraining is judged as the plan says (plan.json records it).
    judged = build_plan(
        "checkpoints", models=PYTHIA, revisions=REVISIONS, estimator="moving-average", alpha=0.1
    )
    fit = next(j for j in judged.jobs if j.command == "fit-onset")
    assert (_arg(fit, "--estimator"), _arg(fit, "--alpha")) == ("moving-average", "0.1")
    assert (judged.estimator, judged.alpha) == ("moving-average", 0.1)


def test_local_revision_folders_are_inputs_and_diagnoses_follow_their_cadence(tmp_path):
    plan = build_plan(
        "checkpoints",
        models=[f"{tmp_path}/suite/m1"],
        revisions=["step0", "step5", "step10", "step15"],
        tokens_per_step=100,
        diagnose_every=2,
        preset="tiny",
        seeds=[0, 1],
    )
    inits = [j for j in plan.jobs if j.command == "init" and j.run_id == "m1-s1"]
    assert [j.inputs for j in inits] == [
        [f"{tmp_path}/suite/m1/step{s}/config.json"] for s in (0, 5, 10, 15)
    ]
    assert [_arg(j, "--seed") for j in inits] == ["1"] * 4
    assert [j.task for j in plan.jobs if j.command == "diagnose"] == [0, 10, 0, 10]


def test_continual_from_a_revision_is_the_continual_protocol_from_the_pretrained_models():
    plan = build_plan(
        "checkpoints",
        models=PYTHIA[:2],
        continual_from="step143000",
        preset="tiny",
        cycles=1,
        mitigations=["none", "l2init"],
    )
    inits = [j for j in plan.jobs if j.command == "init"]
    assert [_arg(j, "--from") for j in inits] == [f"hf:{m}@step143000" for m in PYTHIA[:2]] * 2
    assert [r.run_id for r in plan.runs][:2] == [
        "pythia-70m-s0-step143000",
        "pythia-160m-s0-step143000",
    ]
    assert sum(j.command == "train-task" for j in plan.jobs) == 2 * 2 * 8
    assert {_arg(j, "--tokenizer") for j in plan.jobs if j.command == "shard"} == {
        f"hf:{PYTHIA[0]}@step143000"
    }
    assert not any("--along-pretraining" in j.argv for j in inits)


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"revisions": ["step1"]}, "needs --models"),
        ({"models": ["org/a"]}, "needs --revisions"),
        (
            {"models": ["org/a"], "revisions": ["main"], "tokens_per_step": 1},
            "names no pretraining step",
        ),
        ({"models": ["org/a"], "revisions": ["step1"]}, "--tokens-per-step"),
        ({"models": PYTHIA, "revisions": ["step2", "step1"]}, "not in order"),
        ({"models": ["org/a@step1"], "revisions": ["step1"]}, "without a revision"),
        ({"models": PYTHIA, "revisions": ["step1"], "continual_from": "step9"}, "give one of them"),
        (
            {"models": PYTHIA, "revisions": ["step1"], "cycles": 2},
            "--cycles is a flag of the continual",
        ),
        ({"models": ["org/a", "other/a"], "revisions": ["step1"]}, "share a name"),
        ({"models": PYTHIA, "revisions": ["step1"], "sizes": ["nano"]}, "--sizes is not for"),
    ],
)
def test_bad_checkpoints_plans_are_one_line(kw, fragment):
    with pytest.raises(PlcError, match=fragment):
        build_plan("checkpoints", **kw)


def test_cli_plan_checkpoints(tmp_path, monkeypatch, capsys):
    r = cli(
        monkeypatch, capsys, "plan", "checkpoints", "--models", ",".join(PYTHIA),
        "--revisions", ",".join(REVISIONS), "-o", tmp_path / "Makefile",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "Makefile").read_text()
    assert "init --from hf:EleutherAI/pythia-410m@step4000 --along-pretraining" in text
    r = cli(monkeypatch, capsys, "plan", "checkpoints", "--models", "org/a", "--revisions", "x1")
    assert_bad_input(r, "names no pretraining step")


@pytest.mark.slow
def test_a_tiny_suite_runs_under_make_to_its_onset_table_and_figures(tmp_path):
    """Three sizes × five revisions of local GPT-NeoX models (random weights per revision: the
    mechanics, not a verdict) through init, probe, diagnose, fit-onset and plot under make -j2."""
    from hf_models import save_model, tokenizer_dir

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    tok = tokenizer_dir(tmp_path / "tok")
    models = []
    for i, (width, layers) in enumerate([(16, 1), (32, 2), (48, 3)]):
        for k in range(5):
            folder = tmp_path / "suite" / f"neox-{width}" / f"step{10 * k}"
            save_model(
                "gpt_neox", folder, seed=10 * i + k, tokenizer=tok, width=width, layers=layers
            )
        models.append(f"suite/neox-{width}")
    r = subprocess.run(
        [sys.executable, "-m", "plc", "plan", "checkpoints", "--models", ",".join(models),
         "--revisions", "step0,step10,step20,step30,step40", "--tokens-per-step", "1000",
         "--preset", "tiny", "--diagnose-every", "2", "-o", "Makefile"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    env = {"PLC_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": __import__("os").environ["PATH"]}
    env["PYTHONPATH"] = __import__("os").environ.get("PYTHONPATH", "")
    r = subprocess.run(
        ["make", "-j2", f"PLC={sys.executable} -m plc"], cwd=tmp_path, capture_output=True,
        text=True, env=env, timeout=3600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    onset = pl.read_parquet(tmp_path / "runs" / "onset.parquet")
    assert sorted(onset["size"].to_list()) == ["neox-16", "neox-32", "neox-48"]
    assert onset["n_params"].n_unique() == 3
    for fig in ("auc", "probing", "correlates"):
        assert (tmp_path / "runs" / "figures" / f"{fig}.png").stat().st_size > 0
    probes = pl.read_parquet(
        list((tmp_path / "runs" / "metrics").glob("probe-*-pretrain-vi.parquet"))
    )
    assert sorted(probes["task_index"].unique().to_list()) == [0, 10, 20, 30, 40]
    assert sorted(probes["tokens_seen"].unique().to_list()) == [0, 10_000, 20_000, 30_000, 40_000]
    assert probes["lang"].unique().to_list() == ["pretrain"] and probes["auc"].is_finite().all()
    # plc report reads the study: its page names every model of the suite.
    r = subprocess.run(
        [sys.executable, "-m", "plc", "report", "runs", "-o", "report.html"],
        cwd=tmp_path, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "report.html").read_text()
    assert all(f"neox-{w}" in page for w in (16, 32, 48))


def test_snakefile_sizes_pretrained_models_by_their_names():
    from plc.plan.snakefile import job_resources
    from plc.presets import get_preset

    plan = build_plan(
        "checkpoints",
        models=[PYTHIA[0], "EleutherAI/pythia-1.4b"],
        revisions=["step1"],
        preset="paper",
    )
    probes = {
        j.size: j for j in plan.jobs if j.command == "probe" and "--from-scratch" not in j.argv
    }
    res = {
        size: job_resources(
            j, size=size, tokenizer=plan.tokenizer, preset=get_preset("paper"), launcher=""
        )
        for size, j in probes.items()
    }
    small, big = res["pythia-70m"], res["pythia-1.4b"]
    assert big.mem_mb > small.mem_mb and 10 < big.flops / small.flops < 40
    with pytest.raises(PlcError, match="unknown size"):
        job_resources(
            probes["pythia-70m"],
            size="mystery",
            tokenizer="byte",
            preset=get_preset("paper"),
            launcher="",
        )
