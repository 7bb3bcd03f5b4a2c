"""PlanOptions: every field is exactly one `plc plan` flag, reaches the jobs it should, and is an
error for a plan kind that does not use it (as test_options does for TrainOptions)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import typer
from conftest import assert_bad_input, cli

import plc.plan
from plc.cli import app
from plc.errors import PlcError
from plc.plan import KINDS, Plan, PlanOptions, build_plan
from plc.plan.make import render_makefile
from plc.plan.snakefile import render_snakefile


def _train(plan: Plan) -> list:
    return [j for j in plan.jobs if j.stage == "train"]


def _value(job, flag: str) -> str | None:
    return job.argv[job.argv.index(flag) + 1] if flag in job.argv else None


def _probed_tasks(plan: Plan) -> list[int]:
    return sorted({j.task for j in plan.jobs if j.stage == "probe" and j.task})


# field → (kind, the flag's arguments, the field's value, what the plan shows of it). The checks
# read the jobs, not the options, and their expected values are counted from the protocol.
BASE = {
    "continual": ["--sizes", "nano", "--preset", "tiny", "--cycles", "1"],
    "stationary": ["--sizes", "nano", "--preset", "tiny", "--cycles", "1"],
    "control": ["--sizes", "nano", "--tasks", "4"],
    "transfer": ["--sizes", "nano", "--preset", "tiny"],
    "lr-grid": ["--sizes", "nano,micro", "--preset", "tiny"],
    "checkpoints": ["--models", "EleutherAI/pythia-14m", "--preset", "tiny"],
}
CASES = {
    "sizes": (
        "continual",
        ["--sizes", "nano,micro"],
        ("nano", "micro"),
        lambda p: (
            [r.size for r in p.runs] == ["nano", "micro"]
            and {j.size for j in _train(p)} == {"nano", "micro"}
        ),
    ),
    "cycles": ("continual", ["--cycles", "3"], 3, lambda p: len(_train(p)) == 3 * 8),
    "preset": (
        "continual",
        ["--preset", "paper"],
        "paper",
        lambda p: (
            {j.train["preset"] for j in _train(p)} == {"paper"}
            and {_value(j, "--preset") for j in p.jobs if j.command == "init"} == {"paper"}
        ),
    ),
    "cycle": (
        "continual",
        ["--cycle", "en,fr"],
        ("en", "fr"),
        lambda p: [_value(j, "--lang") for j in _train(p)] == ["en", "fr"],
    ),
    "probe_lang": (
        "transfer",
        ["--cycle", "en,fr", "--probe-lang", "de"],
        "de",
        lambda p: {_value(j, "--lang") for j in p.jobs if j.stage == "probe"} == {"de"},
    ),
    "probe_after": (
        "continual",
        ["--probe-after", "fr,ja"],
        ("fr", "ja"),
        lambda p: _probed_tasks(p) == [3, 4] and _value(_fit(p), "--probe-after") == "fr,ja",
    ),
    "dense_cycles": (
        "continual",
        ["--cycles", "2", "--probe-after", "ru", "--dense-cycles", "2-2"],
        (2, 2),
        lambda p: _probed_tasks(p) == [8, 10, 14, 16],  # zh and de of cycle 2 besides each ru
    ),
    "dense_after": (
        "continual",
        ["--cycles", "2", "--probe-after", "ru", "--dense-cycles", "1-1", "--dense-after", "en"],
        ("en",),
        lambda p: _probed_tasks(p) == [1, 8, 16],
    ),
    "diagnose_every": (
        "stationary",
        ["--cycles", "2", "--diagnose-every", "2"],
        2,
        lambda p: [j.task for j in p.jobs if j.stage == "diagnose"] == [16],
    ),
    "tasks": (
        "control",
        ["--tasks", "5"],
        5,
        lambda p: [j.task for j in _train(p)] == [1, 2, 3, 4, 5],
    ),
    "shared": (
        "control",
        ["--shared", "0.3"],
        0.3,
        lambda p: (
            p.probe_lang == "g00" and "markov:1,symbols=64,shared=0.3" in " ".join(p.jobs[1].argv)
        ),
    ),
    "seeds": (
        "continual",
        ["--seeds", "3,4"],
        (3, 4),
        lambda p: [_value(j, "--seed") for j in p.jobs if j.command == "init"] == ["3", "4"],
    ),
    "weight_decay": (
        "transfer",
        ["--weight-decay", "0.05"],
        0.05,
        lambda p: (
            {_value(j, "--weight-decay") for j in _train(p)} == {"0.05"}
            and not any("--weight-decay" in j.argv for j in p.jobs if j.stage == "probe")
        ),
    ),
    "reset_optimizer": (
        "stationary",
        ["--reset-optimizer"],
        True,
        lambda p: (
            not any("--continue" in j.argv for j in _train(p))
            and p.runs[0].run_id == "nano-s0-reset"
        ),
    ),
    "probe_repeats": (
        "control",
        ["--probe-repeats", "3"],
        3,
        lambda p: {_value(j, "--repeats") for j in p.jobs if j.stage == "probe"} == {"3"},
    ),
    "lrs": (
        "lr-grid",
        ["--lrs", "0.001,0.002"],
        (0.001, 0.002),
        lambda p: [_value(j, "--lr") for j in _train(p)] == ["0.001"] * 2 + ["0.002"] * 2,
    ),
    "val_every": (
        "lr-grid",
        ["--val-every", "7"],
        7,
        lambda p: {_value(j, "--val-every") for j in _train(p)} == {"7"},
    ),
    "val_seqs": (
        "lr-grid",
        ["--val-seqs", "3"],
        3,
        lambda p: {_value(j, "--val-seqs") for j in _train(p)} == {"3"},
    ),
    "transition": (
        "control",
        ["--transition", "16"],
        16,
        lambda p: (
            [r.run_id for r in p.runs] == ["nano-s0-transition16"]
            and {_value(j, "--transition") for j in _train(p)} == {"16"}
            and [len(j.inputs) for j in _train(p)] == [2, 3, 3, 3]  # + the previous task's store
        ),
    ),
    "mitigations": (
        "control",
        ["--mitigation", "none", "--mitigation", "l2init:0.02"],
        ("none", "l2init:0.02"),
        lambda p: (
            [r.method for r in p.runs] == ["", "l2init0.02"]
            and [j.train.get("l2_init") for j in _train(p) if j.task == 1] == [None, 0.02]
        ),
    ),
    "data": (
        "continual",
        ["--data", "stores"],
        "stores",
        lambda p: all(j.output.startswith("stores/") for j in p.jobs if j.stage == "data"),
    ),
    "out_dir": (
        "continual",
        ["--out-dir", "out"],
        "out",
        lambda p: all(j.output.startswith("out/") for j in p.jobs if j.stage != "data"),
    ),
    "tokenizer": (
        "continual",
        ["--tokenizer", "qwen3"],
        "qwen3",
        lambda p: (
            {_value(j, "--tokenizer") for j in p.jobs if j.command in ("shard", "init")}
            == {"qwen3"}
        ),
    ),
    "source": (
        "continual",
        ["--source", "hf:some/corpus"],
        "hf:some/corpus",
        lambda p: (
            {_value(j, "--source") for j in p.jobs if j.stage == "data"} == {"hf:some/corpus"}
        ),
    ),
    "models": (
        "checkpoints",
        ["--models", "org/a,./b", "--revisions", "step1", "--tokens-per-step", "5"],
        ("org/a", "./b"),
        lambda p: (
            [r.size for r in p.runs] == ["a", "b"]
            and [_value(j, "--from") for j in p.jobs if j.command == "init"]
            == ["hf:org/a@step1", "hf:./b@step1"]
        ),
    ),
    "revisions": (
        "checkpoints",
        ["--revisions", "step1,step4"],
        ("step1", "step4"),
        lambda p: (
            _probed_tasks(p) == [1, 4]
            and [j.output.rsplit("/", 1)[1] for j in p.jobs if j.command == "init"]
            == ["step1.pt", "step4.pt"]
        ),
    ),
    "tokens_per_step": (
        "checkpoints",
        ["--revisions", "step3", "--tokens-per-step", "1000"],
        1000,
        lambda p: (
            {_value(j, "--tokens-per-step") for j in p.jobs if j.command == "init"} == {"1000"}
        ),
    ),
    "continual_from": (
        "checkpoints",
        ["--continual-from", "step9", "--cycles", "1"],
        "step9",
        lambda p: (
            len(_train(p)) == 8
            and [_value(j, "--from") for j in p.jobs if j.command == "init"]
            == ["hf:EleutherAI/pythia-14m@step9"]
        ),
    ),
    "launcher": (
        "continual",
        ["--launcher", "torchrun --nproc_per_node 2"],
        "torchrun --nproc_per_node 2",
        lambda p: "PLC_TRAIN ?= torchrun --nproc_per_node 2 -m plc" in render_makefile(p),
    ),
    "nodes": (
        "continual",
        ["--launcher", "torchrun --nproc_per_node 2", "--nodes", "3", "--format", "snakemake"],
        3,
        lambda p: "torchrun --nnodes 3 --rdzv-backend c10d" in render_snakefile(p),
    ),
    "keep_every": (
        "continual",
        ["--keep-every", "4"],
        4,
        lambda p: (
            # tasks 1-8, probed after zh, de, ru (2, 6, 8), 4 the K-th, 8 the last: 1,3,5,7 go
            sorted(int(Path(c).stem[1:]) for c in p.transient_checkpoints()) == [1, 3, 5, 7]
            and ".SECONDARY:" in render_makefile(p)
        ),
    ),
    "gpu": (
        "continual",
        ["--gpu", "a100"],
        "a100",
        lambda p: 'config.get("gpu_tflops", 140.4)' in render_snakefile(p),  # 45 % of 312
    ),
    "mfu": (
        "continual",
        ["--mfu", "0.3"],
        0.3,
        lambda p: 'config.get("gpu_tflops", 296.7)' in render_snakefile(p),  # 30 % of 989
    ),
    "estimator": (
        "control",
        ["--estimator", "moving-average"],
        "moving-average",
        lambda p: (
            p.estimator == "moving-average"
            and {_value(j, "--estimator") for j in p.jobs if "--window" in j.argv}
            == {"moving-average"}
        ),
    ),
    "alpha": (
        "stationary",
        ["--alpha", "0.1"],
        0.1,
        lambda p: (
            p.alpha == 0.1
            and {_value(j, "--alpha") for j in p.jobs if "--window" in j.argv} == {"0.1"}
        ),
    ),
}


def _fit(plan: Plan):
    return next(j for j in plan.jobs if j.command == "fit-onset")


def _plan_command():
    cmd = typer.main.get_command(app)
    return cmd.commands["plan"]


def test_every_field_is_exactly_one_plan_flag():
    fields = dataclasses.fields(PlanOptions)
    assert set(CASES) == {f.name for f in fields}
    params = {p.name: p for p in _plan_command().params}
    own = {"problem", "fmt", "output", "force", "as_json"}
    assert set(params) == own | {f.name for f in fields}
    for f in fields:
        names = f.metadata["flag"].replace("/", ",").split(",")
        p = params[f.name]
        assert sorted(p.opts + p.secondary_opts) == sorted(names), f.name
        assert p.help == f.metadata["help"]
        assert set(f.metadata["kinds"]) <= set(KINDS) and f.metadata["kinds"]
    # No two fields share a flag.
    flags = [n for p in params.values() for n in p.opts + p.secondary_opts]
    assert len(flags) == len(set(flags))


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_flag_reaches_the_jobs(name, monkeypatch, capsys):
    kind, args, value, shows = CASES[name]
    seen: list[PlanOptions] = []

    def capture(kind, options):
        seen.append(options)
        return build_plan(kind, options)

    monkeypatch.setattr(plc.plan, "build_plan", capture)
    r = cli(monkeypatch, capsys, "plan", kind, *BASE[kind], *args)
    assert r.returncode == 0, r.stderr
    (options,) = seen
    assert getattr(options, name) == value
    # The flag, and it alone, makes the difference: the same plan with the field at its default
    # does not show it.
    field = next(f for f in dataclasses.fields(PlanOptions) if f.name == name)
    try:
        default = build_plan(kind, dataclasses.replace(options, **{name: field.default}))
    except PlcError:  # a flag the kind needs (checkpoints' --models): no plan without it
        default = None
    assert shows(build_plan(kind, options)) and (default is None or not shows(default)), name


@pytest.mark.parametrize(
    "name, kind",
    [(n, k) for n, (_, args, _, _) in sorted(CASES.items()) for k in KINDS if k not in
     next(f for f in dataclasses.fields(PlanOptions) if f.name == n).metadata["kinds"]],
)  # fmt: skip
def test_a_flag_for_another_kind_is_one_line_naming_the_kinds_that_use_it(
    name, kind, monkeypatch, capsys
):
    _, args, _, _ = CASES[name]
    f = next(f for f in dataclasses.fields(PlanOptions) if f.name == name)
    flag = f.metadata["flag"].split(",")[0].split("/")[0]
    value = args[args.index(flag) :][:2] if flag in args else args[-2:]
    r = cli(monkeypatch, capsys, "plan", kind, *value)
    kinds = f.metadata["kinds"]
    assert_bad_input(r, f"{flag} is not for the {kind} plan", *kinds)


def test_probe_after_on_the_control_is_an_error():
    # The example: it used to write the same Makefile as without the flag.
    with pytest.raises(
        PlcError, match=r"--probe-after is for the continual and checkpoints plans\)"
    ):
        build_plan("control", probe_after=["zh"])
    with pytest.raises(PlcError, match="--probe-after is not for the stationary plan"):
        build_plan("stationary", probe_after=["zh"])


def test_the_plans_default_probe_positions_are_the_protocols():
    from plc.protocol import PAPER_PROBE_AFTER, default_probe_after

    paper = build_plan(sizes=["nano"], cycles=1, preset="tiny")
    assert _probed_tasks(paper) == [2, 6, 8]  # zh, de, ru: tasks 2, 6 and 8 of the cycle
    assert paper.probe_after == PAPER_PROBE_AFTER == default_probe_after()
    other = build_plan(sizes=["nano"], cycles=2, preset="tiny", cycle=["en", "de", "fr"])
    assert _probed_tasks(other) == [3, 6] and other.probe_after == ("fr",)


def test_weight_decay_is_checked_once_as_training_checks_it():
    from plc.options import TrainOptions

    with pytest.raises(PlcError) as plan_error:
        PlanOptions(weight_decay=-0.1)
    with pytest.raises(PlcError) as train_error:
        TrainOptions(weight_decay=-0.1)
    assert str(plan_error.value) == str(train_error.value)


def test_plan_json_is_written_beside_the_plan_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "study" / "Makefile"
    r = cli(monkeypatch, capsys, "plan", "control", "--sizes", "nano", "--tasks", "4", "-o", out)
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "study" / "plan.json").read_text())
    assert (data["format"], data["version"], data["kind"]) == ("plc-plan", 1, "control")
    assert [r["run_id"] for r in data["runs"]] == ["nano-s0"]
    trains = [j for j in data["jobs"] if j["stage"] == "train"]
    assert [j["task"] for j in trains] == [1, 2, 3, 4]
    resumable = {"save_every_minutes": 30.0}  # a job killed at its wall time resumes on retry
    assert trains[0]["train"] == {"preset": "control", **resumable}
    assert trains[0]["run_id"] == "nano-s0"
    probes = [j for j in data["jobs"] if j["stage"] == "probe"]
    assert probes and all(j["train"]["save_every_minutes"] == 30.0 for j in probes)
    # An existing plan.json is kept without --force, and so is the Makefile: both or neither.
    other = tmp_path / "study" / "Makefile.x"
    r = cli(monkeypatch, capsys, "plan", "control", "--sizes", "micro", "-o", other)
    assert r.returncode == 0 and (tmp_path / "study" / "Makefile.x.plan.json").exists()
    (tmp_path / "study" / "Makefile").unlink()
    r = cli(monkeypatch, capsys, "plan", "control", "--sizes", "micro", "-o", out)
    assert_bad_input(r, "plan.json exists")
    assert not out.exists()


def test_fit_onset_defaults_to_the_plans_probe_positions(tmp_path):
    from plc.plan import write_plan
    from plc.protocol import PAPER_PROBE_AFTER
    from plc.study import plan_of_metrics, verdict_options

    def probe_after_of(paths):
        return verdict_options(plan_of_metrics(paths)).probe_after

    plan = build_plan(sizes=["nano"], cycles=2, preset="tiny", probe_after=["fr"], out_dir="runs")
    write_plan(plan, tmp_path / "Makefile")
    metrics = tmp_path / "runs" / "metrics"
    metrics.mkdir(parents=True)
    probe = metrics / "probe-nano-s0-t3-fr-vi.parquet"
    assert plan_of_metrics([probe]) == plan
    assert probe_after_of([str(metrics / "probe-*.parquet")]) == ("fr",)
    assert probe_after_of([metrics]) == ("fr",)
    # The control probes after every chain: every probe counts; no plan: the protocol's.
    write_plan(build_plan("control", sizes=["nano"], tasks=4), tmp_path / "c" / "Makefile")
    assert probe_after_of([tmp_path / "c" / "runs" / "metrics" / "x.parquet"]) is None
    assert probe_after_of([tmp_path / "elsewhere" / "x.parquet"]) == PAPER_PROBE_AFTER
