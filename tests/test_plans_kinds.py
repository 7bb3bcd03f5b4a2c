"""plc plan's kinds and options, checked on the jobs' argument lists (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_bad_input, cli

from plc.errors import PlcError
from plc.plan import build_plan
from plc.plan.kinds.control import CONTROL_DENSE, CONTROL_EVERY
from plc.plan.kinds.lr_grid import PAPER_LR_GRID
from plc.plan.make import render_makefile
from plc.protocol import CYCLE


def stage(plan, name):
    return [j for j in plan.jobs if j.stage == name]


def flag(job, name):
    return job.argv[job.argv.index(name) + 1] if name in job.argv else None


def analysis(plan, command):
    return next(j for j in stage(plan, "analysis") if j.argv[0] == command)


# ------------------------------------------------------------------------ cycle and probe language


def test_a_cycle_of_other_languages_and_another_probe_language():
    plan = build_plan(sizes=["nano"], cycles=2, preset="tiny", cycle=["en", "fr"], probe_lang="de")
    assert [flag(j, "--lang") for j in stage(plan, "data")] == ["en", "fr", "de"]
    assert [flag(j, "--lang") for j in stage(plan, "train")] == ["en", "fr", "en", "fr"]
    probes = stage(plan, "probe")
    assert {flag(j, "--lang") for j in probes} == {"de"}
    # Probes after the cycle's last language by default; one from-scratch baseline.
    assert [j.output.rsplit("/", 1)[1] for j in probes] == [
        "probe-nano-s0-t0-init-de-scratch.parquet",
        "probe-nano-s0-t2-fr-de.parquet",
        "probe-nano-s0-t4-fr-de.parquet",
    ]
    # ru is not trained on: entropy is measured on the probe language, like the dormant units.
    diag = stage(plan, "diagnose")
    assert [(flag(j, "--dormant-lang"), flag(j, "--entropy-lang")) for j in diag] == [
        ("de", "de")
    ] * 2
    assert plan.cycle == ("en", "fr") and plan.probe_lang == "de" and plan.n_tasks == 4
    assert "2 cycles of 2 tasks (en,fr), probe de" in render_makefile(plan).splitlines()[0]


def test_the_paper_cycle_keeps_the_default_diagnose_languages():
    (diag,) = stage(build_plan(sizes=["nano"], cycles=1, preset="tiny"), "diagnose")
    assert "--dormant-lang" not in diag.argv and "--entropy-lang" not in diag.argv
    assert diag.inputs[1:] == ["data/vi.zarr/zarr.json", "data/ru.zarr/zarr.json"]


def test_languages_need_a_store_or_a_source_that_makes_one(tmp_path):
    with pytest.raises(PlcError, match="in the cycle"):
        build_plan(preset="tiny", probe_lang="en")
    with pytest.raises(PlcError, match=r"no token store .*xx\.zarr .*embedded corpus has no 'xx'"):
        build_plan(preset="tiny", cycle=["en", "xx"], data=str(tmp_path))
    # An existing store is used as it is: no shard job for it.
    (tmp_path / "xx.zarr").mkdir()
    (tmp_path / "xx.zarr" / "zarr.json").write_text("{}")
    plan = build_plan(preset="tiny", cycle=["en", "xx"], data=str(tmp_path))
    assert [flag(j, "--lang") for j in stage(plan, "data")] == ["en", "vi"]
    assert stage(plan, "train")[1].inputs == ["runs/nano-s0/c1.pt", f"{tmp_path}/xx.zarr/zarr.json"]
    # A folder per language: the plan checks the folder is there.
    (tmp_path / "texts" / "en").mkdir(parents=True)
    with pytest.raises(PlcError, match="texts/fr does not exist"):
        build_plan(preset="tiny", cycle=["en", "fr"], source=f"{tmp_path}/texts/{{lang}}")
    with pytest.raises(PlcError, match="names a language twice"):
        build_plan(preset="tiny", cycle=["en", "en"])


# ---------------------------------------------------------------------------------- the control


def test_control_plan_one_chain_per_task_dense_then_sparse_probes():
    plan = build_plan("control", sizes=["nano", "micro"], tasks=24)
    assert plan.preset == "control" and plan.n_tasks == 2 * 24
    shards = stage(plan, "data")
    assert [(flag(j, "--lang"), flag(j, "--source")) for j in shards[:3]] == [
        ("m00", "markov:0,symbols=256"),
        ("m01", "markov:1,symbols=256"),
        ("m02", "markov:2,symbols=256"),
    ]
    assert len(shards) == 25 and flag(shards[-1], "--lang") == "m24"
    nano = [j for j in stage(plan, "train") if "nano-s0/" in j.output]
    assert [flag(j, "--lang") for j in nano] == [f"m{k:02d}" for k in range(1, 25)]
    assert all(flag(j, "--preset") == "control" and "--weight-decay" not in j.argv for j in nano)
    probes = [j for j in stage(plan, "probe") if "nano-s0" in j.output]
    tasks = [int(j.output.split("-t")[1].split("-")[0]) for j in probes]
    assert tasks == [0, *range(1, CONTROL_DENSE + 1), 16, 20, 24]
    assert {flag(j, "--lang") for j in probes} == {"m00"}
    # Two probe seeds per checkpoint by default (the from-scratch baseline too).
    assert {flag(j, "--repeats") for j in probes} == {"2"}
    assert not any("--repeats" in j.argv for j in stage(build_plan(preset="tiny"), "probe"))
    one = build_plan("control", sizes=["nano"], tasks=2, probe_repeats=1)
    assert not any("--repeats" in j.argv for j in stage(one, "probe"))
    diag = [j for j in stage(plan, "diagnose") if "nano-s0" in j.output]
    assert len(diag) == 24 // CONTROL_EVERY
    assert (flag(diag[0], "--dormant-lang"), flag(diag[0], "--entropy-lang")) == ("m00", "m00")
    fit = analysis(plan, "fit-onset")
    assert flag(fit, "--probe-after") == "all" and flag(fit, "--window") == "3"
    assert flag(fit, "--model") == "none"  # two sizes: onsets, no fits
    auc = analysis(plan, "plot")
    assert flag(auc, "--out").endswith("figures/auc.png") and flag(auc, "--x") == "task"
    # The control's chains are not cycles of eight: every figure over training is against tasks.
    figures = {Path(j.output).stem: j for j in stage(plan, "analysis") if j.output.endswith(".png")}
    assert {k for k, j in figures.items() if "--x" in j.argv} == {
        "auc",
        "correlates",
        "dormant-layers",
        "entropy",
    }


def test_plans_take_custom_shapes_between_the_presets():
    # The control's scaling study needs sizes between nano and micro; a shape's name is what
    # `plc init --layers 2 --d-model 64` calls it.
    plan = build_plan("control", sizes=["nano", "L2-d64"], tasks=2)
    inits = stage(plan, "init")
    assert [flag(j, "--size") for j in inits] == ["nano", "L2-d64"]
    assert [flag(j, "--run-id") for j in inits] == ["nano-s0", "L2-d64-s0"]
    # Shorter than the diagnose cadence: no diagnoses, so no figure drawn from them.
    figures = {Path(j.output).stem for j in stage(plan, "analysis") if j.output.endswith(".png")}
    assert figures == {"auc", "probing"}


def test_control_weight_decay_reaches_the_tasks_and_the_run_ids():
    plan = build_plan("control", sizes=["nano"], tasks=4, weight_decay=0.1, seeds=[0, 1])
    train = stage(plan, "train")
    assert {j.output.split("/")[1] for j in train} == {"nano-s0-wd0.1", "nano-s1-wd0.1"}
    assert all(flag(j, "--weight-decay") == "0.1" for j in train)
    # The probe is the instrument: it keeps the preset's settings in both arms.
    assert not any("--weight-decay" in j.argv for j in stage(plan, "probe"))
    assert [flag(j, "--run-id") for j in stage(plan, "init")] == ["nano-s0-wd0.1", "nano-s1-wd0.1"]
    # The preset's own value is no variant: the run ids stay plain.
    same = build_plan("control", sizes=["nano"], tasks=4, weight_decay=0.0)
    assert [flag(j, "--run-id") for j in stage(same, "init")] == ["nano-s0"]
    assert flag(stage(same, "train")[0], "--weight-decay") == "0"


def test_control_bad_inputs():
    for kwargs, match in (
        (dict(tasks=1), "--tasks"),
        (dict(cycle=["en"]), "--cycle is not for the control"),
        (dict(source="embedded"), "--source is not for the control"),
        (dict(tokenizer="qwen3"), "byte tokens"),
        (dict(reset_optimizer=False), "--reset-optimizer is not for the control plan"),
    ):
        with pytest.raises(PlcError, match=match):
            build_plan("control", sizes=["nano"], **kwargs)
    with pytest.raises(PlcError, match="--tasks is for the control"):
        build_plan("continual", preset="tiny", tasks=4)


def test_plan_cli_control_flags(monkeypatch, capsys):
    r = cli(
        monkeypatch,
        capsys,
        "plan",
        "control",
        "--sizes",
        "nano",
        "--tasks",
        "4",
        "--seeds",
        "0,1",
        "--weight-decay",
        "0.1",
        "--probe-repeats",
        "2",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# plc protocol: control, sizes nano, 4 tasks")
    assert "--weight-decay 0.1 --metrics" in r.stdout and "seeds 0,1." in r.stdout
    assert "$(RUNS)/nano-s1-wd0.1/c4.pt:" in r.stdout
    assert " --repeats 2 --metrics" in r.stdout


def test_control_shared_is_the_transfer_control_on_its_own_stores():
    plain = build_plan("control", sizes=["nano"], tasks=12)
    plan = build_plan("control", sizes=["nano"], tasks=12, shared=0.3)
    shards = stage(plan, "data")
    assert [(flag(j, "--lang"), flag(j, "--source")) for j in shards[:2]] == [
        ("g00", "markov:0,symbols=64,shared=0.3"),
        ("g01", "markov:1,symbols=64,shared=0.3"),
    ]
    assert {flag(j, "--lang") for j in stage(plan, "probe")} == {"g00"}
    assert [flag(j, "--lang") for j in stage(plan, "train")] == [f"g{k:02d}" for k in range(1, 13)]
    # The same graph as the plain control but for the chains: stores, probes and cadence.
    assert [j.output.replace("-g", "-m").replace("/g", "/m") for j in plan.jobs] == [
        j.output for j in plain.jobs
    ]
    assert "sharing one map with probability 0.3 (g01…g12), probe chain g00" in plan.description
    with pytest.raises(PlcError, match=r"shared \(β\) must be in \[0, 1\)"):
        build_plan("control", sizes=["nano"], shared=1.0)
    with pytest.raises(PlcError, match="--shared is not for the continual plan"):
        build_plan("continual", preset="tiny", shared=0.3)


def test_plan_cli_shared(monkeypatch, capsys):
    r = cli(
        monkeypatch, capsys, "plan", "control", "--sizes", "nano", "--tasks", "4", "--shared", "0.3"
    )
    assert r.returncode == 0, r.stderr
    assert "--source markov:4,symbols=64,shared=0.3 " in r.stdout
    assert_bad_input(
        cli(monkeypatch, capsys, "plan", "control", "--shared", "-0.5"),
        "shared (β) must be in [0, 1)",
    )


# -------------------------------------------------------------------- dense cycles (App. B)


def test_dense_cycles_probe_zh_de_ru_only_inside_the_band():
    plan = build_plan(
        sizes=["nano"], cycles=5, preset="tiny", probe_after=["ru"], dense_cycles=(2, 3)
    )
    probed = [int(j.output.split("-t")[1].split("-")[0]) for j in stage(plan, "probe")]
    ru = [8, 16, 24, 32, 40]
    band = [10, 14, 18, 22]  # zh and de of cycles 2 and 3
    assert probed == [0, *sorted(ru + band)]
    fit = analysis(plan, "fit-onset")
    assert flag(fit, "--probe-after") == "zh,de,ru"
    probing = next(j for j in stage(plan, "analysis") if j.argv[:2] == ["plot", "probing"])
    assert flag(probing, "--probe-after") == "zh,de,ru"
    custom = build_plan(
        sizes=["nano"],
        cycles=2,
        preset="tiny",
        probe_after=["ru"],
        dense_cycles=(2, 2),
        dense_after=["fr"],
    )
    assert [int(j.output.split("-t")[1].split("-")[0]) for j in stage(custom, "probe")] == [
        0,
        8,
        11,
        16,
    ]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dense_cycles=(4, 9)), "outside the plan's cycles 1-5"),
        (dict(dense_cycles=(0, 2)), "outside"),
        (dict(dense_cycles=(2, 3), dense_after=["vi"]), "not in the cycle"),
        (dict(dense_after=["zh"]), "needs --dense-cycles"),
    ],
)
def test_dense_cycles_bad_inputs(kwargs, match):
    with pytest.raises(PlcError, match=match):
        build_plan(sizes=["nano"], cycles=5, preset="tiny", **kwargs)


def test_dense_cycles_cli(monkeypatch, capsys):
    args = ("plan", "continual", "--cycles", "3", "--probe-after", "ru", "--dense-cycles")
    r = cli(monkeypatch, capsys, *args, "2-3", "--sizes", "nano")
    assert r.returncode == 0 and "probe-nano-s0-t10-zh-vi.parquet" in r.stdout
    assert "probe-nano-s0-t2-zh-vi.parquet" not in r.stdout
    r = cli(monkeypatch, capsys, *args, "4-9")
    assert r.returncode == 2 and "outside the plan's cycles 1-3" in r.stderr
    r = cli(monkeypatch, capsys, *args, "x")
    assert r.returncode == 2 and "range of cycles" in r.stderr


# ------------------------------------------------------------------------------ shard budgets


def test_paper_plan_shards_the_paper_budgets():
    plan = build_plan(
        sizes=["5M"], cycles=1, preset="paper", source="hf:uonlp/CulturaX", tokenizer="qwen3"
    )
    budgets = {
        flag(j, "--lang"): (flag(j, "--train-tokens"), flag(j, "--val-tokens"))
        for j in stage(plan, "data")
    }
    assert budgets == {
        **{lang: ("100000000000", "1000000000") for lang in CYCLE},
        "vi": ("20000000000", "1000000000"),
    }
    assert flag(stage(plan, "data")[0], "--source") == "hf:uonlp/CulturaX"
    # The small presets take the whole embedded corpus.
    cpu = build_plan(sizes=["nano"], cycles=1, preset="cpu")
    assert not any("--train-tokens" in j.argv for j in stage(cpu, "data"))


# ------------------------------------------------------------------------------------- seeds


def test_seeds_are_independent_runs_pooled_by_fit_onset():
    plan = build_plan(sizes=["nano", "micro"], cycles=2, preset="tiny", seeds=[0, 1, 2])
    inits = stage(plan, "init")
    assert [(flag(j, "--size"), flag(j, "--seed"), flag(j, "--run-id")) for j in inits] == [
        (size, str(s), f"{size}-s{s}") for size in ("nano", "micro") for s in (0, 1, 2)
    ]
    assert plan.n_tasks == 6 * 16 and plan.seeds == [0, 1, 2] and plan.seed == 0
    fit = analysis(plan, "fit-onset")
    assert len({d.split("probe-")[1].split("-t")[0] for d in fit.inputs if "probe-" in d}) == 6
    # One set of stores, sharded with the first seed.
    assert {flag(j, "--seed") for j in stage(plan, "data")} == {"0"}
    with pytest.raises(PlcError, match="distinct non-negative"):
        build_plan(preset="tiny", seeds=[0, 0])


def test_seeds_cli(monkeypatch, capsys):
    r = cli(monkeypatch, capsys, "plan", "continual", "--sizes", "nano", "--seeds", "3,4")
    assert r.returncode == 0 and "--run-id nano-s3 " in r.stdout and "--run-id nano-s4 " in r.stdout
    r = cli(monkeypatch, capsys, "plan", "continual", "--seeds", "a")
    assert r.returncode == 2 and "--seeds must be integers" in r.stderr


# ----------------------------------------------------------------- stationary: one optimizer


def test_stationary_is_one_run_of_continued_tasks():
    plan = build_plan("stationary", sizes=["nano"], cycles=1, preset="tiny")
    train = stage(plan, "train")
    assert ["--continue" in j.argv for j in train] == [True] * 8
    assert flag(analysis(plan, "fit-onset"), "--probe-after") == "all"
    assert "optimizer continued (one warm-up)" in render_makefile(plan).splitlines()[0]
    reset = build_plan("stationary", sizes=["nano"], cycles=1, preset="tiny", reset_optimizer=True)
    assert not any("--continue" in j.argv for j in stage(reset, "train"))
    assert flag(stage(reset, "init")[0], "--run-id") == "nano-s0-reset"
    # The continual protocol resets (§IV-B); continuing is its variant, named in the run id.
    cont = build_plan(sizes=["nano"], cycles=1, preset="tiny", reset_optimizer=False)
    assert ["--continue" in j.argv for j in stage(cont, "train")] == [True] * 8
    assert flag(stage(cont, "init")[0], "--run-id") == "nano-s0-cont"
    plain = build_plan(sizes=["nano"], cycles=1, preset="tiny")
    assert not any("--continue" in j.argv for j in stage(plain, "train"))


# ------------------------------------------------------------------------- transfer (Table III)


def test_transfer_plan_one_task_of_each_language_from_initialisation():
    plan = build_plan("transfer", sizes=["nano", "micro"], preset="tiny")
    train = [j for j in stage(plan, "train") if "nano-s0/" in j.output]
    assert [flag(j, "--lang") for j in train] == list(CYCLE)
    assert {flag(j, "--ckpt") for j in train} == {"runs/nano-s0/c0.pt"}
    assert [j.output for j in train][:2] == ["runs/nano-s0/c1-en.pt", "runs/nano-s0/c1-zh.pt"]
    probes = [j for j in stage(plan, "probe") if "nano-s0" in j.output]
    assert [j.output.rsplit("/", 1)[1] for j in probes][:2] == [
        "probe-nano-s0-t0-init-vi-scratch.parquet",
        "probe-nano-s0-t1-en-vi.parquet",
    ]
    tables = [j for j in stage(plan, "analysis") if j.argv[0] == "transfer-table"]
    assert [flag(j, "--out") for j in tables] == ["runs/transfer.csv", "runs/figures/transfer.png"]
    assert all(len(j.inputs) == 2 * 9 for j in tables)
    assert plan.n_tasks == 16


def test_transfer_plan_without_the_stores(tmp_path):
    with pytest.raises(PlcError, match=r"no token store .*it\.zarr"):
        build_plan("transfer", preset="tiny", cycle=["en", "it"], data=str(tmp_path))


@pytest.mark.parametrize(
    "problem, kwargs, match",
    [
        ("transfer", dict(cycles=2), "--cycles is not for the transfer plan"),
        ("transfer", dict(diagnose_every=1), "--diagnose-every is not for the transfer"),
        ("lr-grid", dict(probe_after=["ru"]), "--probe-after is not for the lr-grid plan"),
        ("lr-grid", dict(probe_repeats=2), "--probe-repeats is not for the lr-grid plan"),
        ("transfer", dict(reset_optimizer=True), "--reset-optimizer is not for the transfer"),
    ],
)
def test_flags_a_plan_kind_has_no_use_for(problem, kwargs, match):
    with pytest.raises(PlcError, match=match):
        build_plan(problem, sizes=["nano", "micro"], preset="tiny", **kwargs)


# ----------------------------------------------------------------------- lr grid (App. A)


def test_lr_grid_one_task_per_size_and_rate_then_fit_lr():
    plan = build_plan("lr-grid", sizes=["5M", "314M"], preset="paper", lrs=[1e-3, 3e-3])
    assert [flag(j, "--lang") for j in stage(plan, "data")] == ["en"]
    train = stage(plan, "train")
    # Each job is known by its train metric file, written whether the rate trains or diverges.
    assert [(j.output, flag(j, "--out"), flag(j, "--lr")) for j in train] == [
        (f"runs/metrics/train-{run}-t1-en.parquet", f"runs/{run}/c1.pt", lr)
        for run, lr in (
            ("5M-s0-lr0.001", "0.001"),
            ("314M-s0-lr0.001", "0.001"),
            ("5M-s0-lr0.003", "0.003"),
            ("314M-s0-lr0.003", "0.003"),
        )
    ]
    assert all(j.diverged_ok for j in train)
    assert not any(j.diverged_ok for j in plan.jobs if j.stage != "train")
    assert {flag(j, "--val-every") for j in train} == {"95"}  # the paper's probe cadence
    # The paper preset's 1B val tokens hold its 1,280 validation windows.
    assert {flag(j, "--val-seqs") for j in train} == {"1280"}
    assert {flag(j, "--ckpt") for j in train} == {j.output for j in stage(plan, "init")}
    fit = analysis(plan, "fit-lr")
    assert fit.stdout and fit.output == "runs/lr-fit.txt"
    assert fit.inputs == [j.output for j in train] == fit.command_line()[1:]
    text = render_makefile(plan)
    assert "\t$(PLC) fit-lr $^ > $@.tmp && mv $@.tmp $@" in text
    assert "$(RUNS)/lr-fit.txt: $(METRICS)/train-5M-s0-lr0.001-t1-en.parquet" in text
    assert "--force || { test $$? -eq 3 && test -f $@; }\n" in text
    from plc.plan.snakefile import render_snakefile

    snake = render_snakefile(plan)
    assert "{PLC} fit-lr {input:q} > {output:q}" in snake
    assert "--force || {{ test $? -eq 3 && test -f {output:q}; }}" in snake
    full = build_plan("lr-grid", sizes=["5M", "314M"], preset="paper", val_every=10)
    assert len(stage(full, "train")) == 2 * len(PAPER_LR_GRID)
    assert {flag(j, "--val-every") for j in stage(full, "train")} == {"10"}


def test_lr_grid_validates_on_what_the_store_holds(tmp_path):
    # The cpu preset validates on 30 windows of 65 tokens; the embedded en's val split holds
    # 1,902 tokens: 28 windows after seed 0's random offset (plc.data.sampling.eval_slots).
    from plc.data.sampling import eval_slots

    room = eval_slots(1902, 64, 0)[1].size
    assert room == 28
    plan = build_plan(
        "lr-grid", sizes=["nano", "micro"], preset="cpu", lrs=[1e-3], data=str(tmp_path)
    )
    assert {flag(j, "--val-seqs") for j in stage(plan, "train")} == {str(room)}
    # Asked for fewer: as asked; for more than the split holds: refused at plan time.
    kw = dict(sizes=["nano", "micro"], preset="cpu", lrs=[1e-3], data=str(tmp_path))
    few = build_plan("lr-grid", val_seqs=5, **kw)
    assert {flag(j, "--val-seqs") for j in stage(few, "train")} == {"5"}
    with pytest.raises(PlcError, match="holds 28 validation windows of 65 tokens, not 29"):
        build_plan("lr-grid", val_seqs=29, **kw)
    # An existing store is measured, not the one the source would make.
    from plc.data.shard import shard

    shard("en", tmp_path / "en.zarr", val_tokens=200, seed=0)
    small = build_plan("lr-grid", **kw)
    assert {flag(j, "--val-seqs") for j in stage(small, "train")} == {
        str(eval_slots(200, 64, 0)[1].size)
    }


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sizes=["5M"]), "at least two sizes"),
        (dict(lrs=[1e-3, -1.0]), "distinct positive"),
        (dict(val_every=0), "--val-every must be positive"),
    ],
)
def test_lr_grid_bad_inputs(kwargs, match):
    with pytest.raises(PlcError, match=match):
        build_plan("lr-grid", **{"sizes": ["nano", "micro"], "preset": "tiny", **kwargs})


def test_plan_cli_bad_inputs_one_line():
    from conftest import run_plc

    assert_bad_input(run_plc("plan", "continual", "--probe-lang", "en"), "is in the cycle")
    assert_bad_input(run_plc("plan", "lr-grid", "--sizes", "5M"), "at least two sizes")
    assert_bad_input(run_plc("plan", "transfer", "--cycle", "en,it"), "no token store")


def test_mitigation_runs_the_protocol_once_per_method():
    plan = build_plan(
        "control", sizes=["nano"], tasks=4, mitigations=["none", "cbp", "sp:0.8,0.01", "redo:0.1,5"]
    )
    trains = [j for j in plan.jobs if j.stage == "train"]
    runs = {j.output.split("/")[-2]: j.argv for j in trains if j.output.endswith("c4.pt")}
    assert set(runs) == {"nano-s0", "nano-s0-cbp0.0001", "nano-s0-sp0.8_0.01", "nano-s0-redo0.1_5"}
    assert "--cbp" not in runs["nano-s0"] and "--shrink-perturb" not in runs["nano-s0"]
    argv = runs["nano-s0-cbp0.0001"]
    assert argv[argv.index("--cbp") + 1] == "0.0001"  # the reference code's default ρ
    argv = runs["nano-s0-redo0.1_5"]
    assert argv[argv.index("--redo") + 1] == "0.1" and argv[argv.index("--redo-every") + 1] == "5"
    # Probes and diagnoses are the same instrument for every method: no remedy flag in them.
    others = [j.argv for j in plan.jobs if j.stage in ("probe", "diagnose")]
    assert not any(f in a for a in others for f in ("--cbp", "--shrink-perturb", "--redo"))
    for bad, message in (("bogus", "unknown --mitigation 'bogus'"),
                         ("sp:2,0.1", r"--shrink-perturb λ must be in \(0, 1\]"),
                         ("sp", "needs its value"), ("none:1", "takes no arguments")):  # fmt: skip
        with pytest.raises(PlcError, match=message):
            build_plan("control", sizes=["nano"], tasks=4, mitigations=[bad])
    with pytest.raises(PlcError, match="twice"):
        build_plan("control", sizes=["nano"], tasks=4, mitigations=["cbp", "cbp:0.0001"])
    # The cpu preset already decays by 0.1: that arm would repeat the baseline's runs.
    with pytest.raises(PlcError, match="cpu preset's own weight decay"):
        build_plan("continual", sizes=["nano"], mitigations=["none", "wd:0.10"])
    assert len(build_plan("continual", sizes=["nano"], mitigations=["none", "wd:0"]).jobs) > 0
