"""The jobs every plan kind shares: token stores, initial checkpoints, tasks, probes, diagnostics,
the onset fit and the figures; and the settings every kind resolves the same way."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from plc.data.sources import embedded_languages, folder_files
from plc.errors import PlcError
from plc.hf.source import Source
from plc.options import number
from plc.plan.jobs import INPUTS, Job, Plan, Run
from plc.plan.options import PlanOptions, parse_mitigation
from plc.presets import get_preset
from plc.protocol import (
    CYCLE,
    ENTROPY_LANG,
    MIN_FIT_POINTS,
    NO_STORE_LANGS,
    ONSET_WINDOW,
    PLOT_KINDS,
    PROBE_LANG,
)
from plc.store import metric_path

X_KINDS = ("auc", "correlates", "dormant-layers", "entropy")  # the figures `plc plot --x` sets
CONTROL_REPEATS = 2  # the control's probe seeds per probed checkpoint (its jitter dominates)
# Training and probe jobs save resumable state this often, so a job killed at its wall time (or a
# node lost) repeats at most this much on its retry; SIGTERM/SIGUSR1 save at once (plc.train).
SAVE_EVERY_MINUTES = 30.0
# A language read from a dataset or a folder is sharded by jobs of SHARD_WORKERS processes, one
# job per SHARD_PART_TOKENS of its budget (the paper's 101B tokens: 11 jobs of ≈ 1.2 h each at the
# ≈ 2.2M tokens/s a core measured through hf:), then merged by one more; a job that fails is
# redone alone.
SHARD_WORKERS = 8
SHARD_PART_TOKENS = 10_000_000_000


def metric_file(
    metrics: str, kind: str, run_id: str, task: int, lang: str, suffix: str = ""
) -> str:
    return str(metric_path(metrics, kind, run_id, task, lang, suffix or None))


def can_shard(source: str, lang: str) -> str | None:
    """None if `source` can make the store of `lang`, else why not."""
    if source.startswith(("hf:", "markov:")):
        return None
    if source == "embedded":
        if lang in embedded_languages():
            return None
        return f"the embedded corpus has no {lang!r}"
    path = source.replace("{lang}", lang)
    return None if Path(path).exists() else f"{path} does not exist"


def val_tokens(
    data: str,
    lang: str,
    source: str,
    tokenizer: str,
    budget: tuple[int | None, int | None],
    seed: int,
) -> int | None:
    """Val tokens of the store of `lang`: the store's own where it exists, else its val budget,
    else what `plc shard` makes of the embedded corpus; None for another source without one."""
    store = Path(data) / f"{lang}.zarr"
    if store.exists():
        from plc.data.tokenstore import open_store

        return int(open_store(store).val.shape[0])
    if budget[1] is not None:
        return budget[1]
    if source == "embedded":
        return _embedded_val_tokens(lang, tokenizer, budget[0], seed)
    return None


@functools.cache
def _embedded_val_tokens(lang: str, tokenizer: str, train: int | None, seed: int) -> int | None:
    """What `plc shard` puts in the val split of an embedded language, sharded here into a
    temporary folder (the embedded corpus is small: well under a second); None where it cannot
    be sharded here (a tokenizer this machine lacks): the plan's shard job will say why."""
    import tempfile

    from plc.data.shard import shard

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{lang}.zarr"
        try:
            return shard(lang, out, tokenizer=tokenizer, train_tokens=train, seed=seed).val_tokens
        except PlcError:
            return None


class Builder:
    """One plan under construction: the options resolved against the preset, and its jobs."""

    def __init__(self, kind: str, o: PlanOptions):
        o.check_kind(kind)
        self.kind, self.o = kind, o
        self.p = p = get_preset(o.preset or ("control" if kind == "control" else "cpu"))
        self.sizes = list(p.sizes if o.sizes is None else o.sizes)
        self.seeds = list(o.seeds)
        self.tokenizer = p.tokenizer if o.tokenizer is None else o.tokenizer
        self.probe_repeats = o.probe_repeats or (CONTROL_REPEATS if kind == "control" else 1)
        self.data, self.out_dir, self.launcher = o.data, o.out_dir, o.launcher
        self.metrics, self.figures = f"{o.out_dir}/metrics", f"{o.out_dir}/figures"
        self.methods = self._methods()
        self.preset = {"preset": p.name}
        self.resumable = {"save_every_minutes": SAVE_EVERY_MINUTES}
        self.jobs: list[Job] = []
        self.runs: list[Run] = []
        # plc plan checkpoints --continual-from: the Hugging Face model (by size, its name) each
        # run starts from, at that revision.
        self.hf_models: dict[str, str] = {}
        self.start_revision: str | None = None
        self.window = ONSET_WINDOW

    def _methods(self) -> list[tuple[str, dict[str, Any]]]:
        """(run id tag, TrainOptions fields) of every --mitigation, each with --transition."""
        specs = self.o.mitigations or ("none",)
        methods = [parse_mitigation(m, self.o.transition) for m in specs]
        if len({tag for tag, _ in methods}) < len(methods):
            raise PlcError(f"--mitigation names a method twice: {','.join(specs)}")
        same = [
            t
            for t, train in methods
            if list(train) == ["weight_decay"] and train["weight_decay"] == self.p.weight_decay
        ]
        if same and ("", {}) in methods:
            raise PlcError(
                f"--mitigation {same[0][:2]}:{same[0][2:]} is the {self.p.name} preset's own "
                "weight decay: the same runs as none; drop it or give another λ"
            )
        return methods

    def languages(self) -> tuple[tuple[str, ...], str, str]:
        """(cycle, probe language, source) of a plan on text, checked."""
        cycle = CYCLE if self.o.cycle is None else self.o.cycle
        probe_lang = PROBE_LANG if self.o.probe_lang is None else self.o.probe_lang
        if probe_lang in cycle:
            raise PlcError(
                f"--probe-lang {probe_lang} is in the cycle {','.join(cycle)}: the probe language "
                "must be one the model never trains on"
            )
        return cycle, probe_lang, "embedded" if self.o.source is None else self.o.source

    def plan(
        self,
        description: str,
        cycle: Sequence[str],
        probe_lang: str,
        probe_after: Sequence[str] | None,
        cycles: int = 1,
    ) -> Plan:
        return Plan(
            kind=self.kind,
            description=description,
            preset=self.p.name,
            tokenizer=self.tokenizer,
            sizes=self.sizes,
            seeds=self.seeds,
            cycles=cycles,
            cycle=tuple(cycle),
            probe_lang=probe_lang,
            probe_after=None if probe_after is None else tuple(probe_after),
            data=self.data,
            out_dir=self.out_dir,
            metrics=self.metrics,
            figures=self.figures,
            launcher=self.launcher,
            runs=self.runs,
            jobs=self.jobs,
            nodes=self.o.nodes,
            keep_every=self.o.keep_every,
            gpu=self.o.gpu,
            mfu=self.o.mfu,
            estimator=self.o.estimator,
            alpha=self.o.alpha,
            window=self.window,
        )

    # ---------------------------------------------------------------------------- runs

    def each_run(self, tags: Sequence[str] = ()) -> list[tuple[Run, dict[str, Any]]]:
        """Every run (methods outermost, then sizes, then seeds) with its method's TrainOptions
        fields; `tags` name what else differs from the preset (`wd0.05`, `reset`, `lr0.001`)."""
        out = []
        for method, train in self.methods:
            for size in self.sizes:
                for seed in self.seeds:
                    run_id = "-".join([size, f"s{seed}", *tags, *([method] if method else [])])
                    run = Run(run_id, size, seed, f"{self.out_dir}/{run_id}", method)
                    self.runs.append(run)
                    out.append((run, train))
        return out

    def weight_decay(self) -> tuple[list[str], dict[str, Any]]:
        """(run id tags, TrainOptions fields) of --weight-decay (a tag where not the preset's)."""
        wd = self.o.weight_decay
        if wd is None:
            return [], {}
        return ([] if wd == self.p.weight_decay else [f"wd{number(wd)}"]), {"weight_decay": wd}

    # ---------------------------------------------------------------------------- jobs

    def store(self, lang: str) -> str:
        return f"{self.data}/{lang}.zarr/zarr.json"

    def shard(self, lang: str, source: str, budget: tuple[int | None, int | None]) -> None:
        """A shard job for `lang`, or none if its store exists and `source` cannot make it."""
        why = can_shard(source, lang)
        if why is not None:
            if Path(self.store(lang)).exists():
                return  # an existing store is an input of the plan, not one of its jobs
            raise PlcError(
                f"no token store {self.data}/{lang}.zarr and --source {source} cannot make one "
                f"({why}); shard it first or give a --source that has it"
            )
        train, val = budget
        path = source.replace("{lang}", lang)
        args = ["--lang", lang, "--source", path]
        args += ["--tokenizer", self.tokenizer, "--out", f"{self.data}/{lang}.zarr"]
        args += [] if train is None else ["--train-tokens", str(train)]
        args += [] if val is None else ["--val-tokens", str(val)]
        args += ["--seed", str(self.seeds[0]), "--force"]
        if source == "embedded" or source.startswith("markov:"):  # small: one process
            self.jobs.append(Job("shard", self.store(lang), stage="data", args=args))
            return
        parts = 1
        if train is not None and (source.startswith("hf:") or Path(path).is_dir()):
            parts = -(-(train + (val or 0)) // SHARD_PART_TOKENS)
            if Path(path).is_dir():
                parts = max(1, min(parts, len(folder_files(Path(path)))))
        workers = ["--workers", str(SHARD_WORKERS)]
        if parts == 1:
            self.jobs.append(Job("shard", self.store(lang), stage="data", args=args + workers))
            return
        from plc.data.shard import part_path  # numpy: not at the top, `plc --help` reaches here

        outputs = []
        for i in range(1, parts + 1):
            outputs.append(f"{part_path(f'{self.data}/{lang}.zarr', i, parts)}/zarr.json")
            part = ["--part", f"{i}/{parts}", *workers]
            self.jobs.append(Job("shard", outputs[-1], stage="data", args=args + part))
        merge = ["--parts", str(parts)]
        self.jobs.append(Job("shard", self.store(lang), outputs, "data", args + merge))

    def shards(self, cycle: Sequence[str], probe_lang: str, source: str) -> None:
        for lang in cycle:
            self.shard(lang, source, self.p.shard_tokens)
        self.shard(probe_lang, source, self.p.probe_shard_tokens)

    def init(self, run: Run) -> str:
        out = f"{run.folder}/c0.pt"
        if run.size in self.hf_models:  # its tokenizer is the model's own
            source = f"hf:{self.hf_models[run.size]}@{self.start_revision}"
            args = ["--from", source, "--preset", self.p.name, *self._hf_tokenizer()]
        else:
            args = ["--size", run.size, "--preset", self.p.name, "--tokenizer", self.tokenizer]
        args += ["--seed", str(run.seed), "--run-id", run.run_id, "--out", out, "--force"]
        self.jobs.append(Job("init", out, stage="init", args=args, **self._of(run, 0)))
        return out

    def pretraining_point(
        self, run: Run, src: Source, step: int, tokens_per_step: int | None
    ) -> str:
        """The checkpoint of revision `src` as the point `step` of `run`'s pretraining
        (`plc init --from … --along-pretraining`); a local revision folder's config.json is its
        input (a Hub model is no file of the plan)."""
        out = f"{run.folder}/{src.revision}.pt"
        args = ["--from", src.spec, "--along-pretraining"]
        args += [] if tokens_per_step is None else ["--tokens-per-step", str(tokens_per_step)]
        args += ["--preset", self.p.name, *self._hf_tokenizer(), "--seed", str(run.seed)]
        args += ["--run-id", run.run_id, "--out", out, "--force"]
        inputs = (
            [str(Path(src.name) / (src.revision or "") / "config.json")] if src.is_local else []
        )
        self.jobs.append(Job("init", out, inputs, "init", args, **self._of(run, step)))
        return out

    def _hf_tokenizer(self) -> list[str]:
        """A pretrained model's init takes its own tokenizer unless the plan names one."""
        return [] if self.o.tokenizer is None else ["--tokenizer", self.tokenizer]

    def train(
        self,
        run: Run,
        task: int,
        src: str,
        out: str,
        what: list[str],
        stores: list[str],
        train: dict[str, Any],
        after: Sequence[str] = (),
        record: str | None = None,
        earlier: Sequence[str] = (),
    ) -> None:
        """Task `task` of `run` from checkpoint `src`: `what` its data (--lang L, --mix …), `train`
        the TrainOptions fields it sets beside the preset, `after` train-task's own flags.

        `earlier`: the languages of the run's earlier tasks, in order; with replay or a transition
        in `train` their stores (all, or the last) are the job's inputs too.

        `record`: the task's train metric file as the job's target instead of the checkpoint —
        the one file the task writes whether it finishes or diverges, so that a diverged task
        (exit status 3, no checkpoint) counts as done (App. A's grid goes on to fit-lr)."""
        lang = what[what.index("--lang") + 1] if "--lang" in what else None
        before = [x for x in dict.fromkeys(reversed(earlier)) if x != lang]  # latest first
        if train.get("replay") is not None:
            stores = [*stores, *(self.store(x) for x in before)]
        elif train.get("transition") is not None and earlier and earlier[-1] != lang:
            stores = [*stores, self.store(earlier[-1])]
        self.jobs.append(
            Job(
                "train-task",
                out if record is None else record,
                [src, *stores],
                "train",
                args=[*what, "--ckpt", src, "--data", self.data, "--out", out],
                train={**self.preset, **self.resumable, **train},
                args_after=[*after, "--metrics", self.metrics, "--force"],
                launch=True,
                diverged_ok=record is not None,
                **self._of(run, task),
            )
        )

    def val_windows(
        self, lang: str, source: str, budget: tuple[int | None, int | None]
    ) -> int | None:
        """Evaluation windows of the preset's length that the val split of `lang` holds for every
        seed of the plan (each run draws its own from its seed), or None where that is unknown
        until the store exists (a file or dataset without a val budget)."""
        from plc.data.sampling import eval_slots  # numpy: not for `plc --help`

        val = val_tokens(self.data, lang, source, self.tokenizer, budget, self.seeds[0])
        if val is None:
            return None
        return min(eval_slots(val, self.p.seq_len, seed)[1].size for seed in self.seeds)

    def probe(self, run: Run, task: int, ckpt: str, task_lang: str, probe_lang: str) -> str:
        out = metric_file(self.metrics, "probe", run.run_id, task, task_lang, probe_lang)
        self._probe(run, task, ckpt, probe_lang, out, [])
        return out

    def scratch_probe(self, run: Run, c0: str, probe_lang: str) -> str:
        out = metric_file(self.metrics, "probe", run.run_id, 0, "", f"{probe_lang}-scratch")
        self._probe(run, 0, c0, probe_lang, out, ["--from-scratch"])
        return out

    def _probe(self, run: Run, task: int, ckpt: str, lang: str, out: str, extra: list[str]) -> None:
        repeats = ["--repeats", str(self.probe_repeats)] if self.probe_repeats > 1 else []
        self.jobs.append(
            Job(
                "probe",
                out,
                [ckpt, self.store(lang)],
                "probe",
                args=[ckpt, "--data", self.data, "--lang", lang],
                train={**self.preset, **self.resumable},
                args_after=[*extra, *repeats, "--metrics", self.metrics, "--force"],
                launch=True,
                **self._of(run, task),
            )
        )

    def diagnose(
        self, run: Run, task: int, ckpt: str, task_lang: str, probe_lang: str, entropy: str
    ) -> str:
        out = metric_file(self.metrics, "diagnose", run.run_id, task, task_lang)
        args = [ckpt, "--data", self.data, "--preset", self.p.name]
        args += [] if probe_lang == PROBE_LANG else ["--dormant-lang", probe_lang]
        args += [] if entropy == ENTROPY_LANG else ["--entropy-lang", entropy]
        args += ["--metrics", self.metrics, "--force"]
        # The perturbation reads the last task's language (a mixture's, a pretraining point's:
        # the probe language's), as DiagnoseOptions.resolve does.
        perturbed = probe_lang if task_lang in NO_STORE_LANGS else task_lang
        stores = [self.store(probe_lang), self.store(entropy), self.store(perturbed)]
        inputs = [ckpt, *dict.fromkeys(stores)]
        self.jobs.append(Job("diagnose", out, inputs, "diagnose", args, **self._of(run, task)))
        return out

    def analysis(
        self, output: str, argv: list[str], inputs: list[str], stdout: bool = False
    ) -> None:
        command, *args = argv
        self.jobs.append(Job(command, output, list(inputs), "analysis", args, stdout=stdout))

    @staticmethod
    def _of(run: Run, task: int) -> dict[str, Any]:
        return {"run_id": run.run_id, "size": run.size, "task": task}

    def onset_and_figures(
        self, inputs: list[str], probes_per_run: int, probe_after: str, x: str = ""
    ) -> None:
        """fit-onset and the figures over every probe and diagnose file; `x` the figures' axis
        where cycles of eight mean nothing (the control: task)."""
        # The fits of Table V need three sizes; with fewer the plan still finds each run's onset.
        # An onset needs two probes per run, the centred moving average of App. B three.
        fits = "all" if len(self.sizes) >= MIN_FIT_POINTS else "none"
        self.window = ONSET_WINDOW if probes_per_run >= ONSET_WINDOW else 1
        onset_args = ["--probe-after", probe_after, "--window", str(self.window)]
        onset_args += ["--estimator", self.o.estimator, "--alpha", f"{self.o.alpha:g}"]
        if probes_per_run >= 2:
            onset = f"{self.out_dir}/onset.parquet"
            argv = ["fit-onset", INPUTS, "--model", fits, *onset_args, "--out", onset, "--force"]
            self.analysis(onset, argv, inputs)
        diagnosed = any(j.stage == "diagnose" for j in self.jobs)
        for kind in PLOT_KINDS:
            if kind in ("probing", "onset") and probes_per_run < 2:
                continue
            if kind in ("correlates", "dormant-layers", "entropy") and not diagnosed:
                continue  # e.g. a control shorter than its diagnose cadence
            if kind == "onset" and fits == "none":
                continue
            fig = f"{self.figures}/{kind}.png"
            extra = onset_args if kind in ("probing", "onset", "correlates") else []
            extra += ["--x", x] if x and kind in X_KINDS else []
            self.analysis(fig, ["plot", kind, INPUTS, *extra, "--out", fig, "--force"], inputs)
