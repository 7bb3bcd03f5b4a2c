"""Run a plan's jobs in a small pool of worker processes, in dependency order.

What runs a job is the caller's choice: `run_subprocess` starts a fresh `plc` process per job;
the command line passes its own in-process runner (plc.cli.run_argv), so that each worker imports
torch once and then runs many subcommands: at toy scale the 2–4 s start-up of a fresh process
would cost more than the tasks themselves. A job whose file already exists is skipped, so an
interrupted run continues where it stopped (like `make`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from plc.errors import PlcError
from plc.plan import Job, Plan

# Runs one `plc` command line (the arguments after `plc`) and returns its exit status. Must be a
# top-level function: the worker processes are spawned and receive it pickled by name.
Execute = Callable[[list[str]], int | None]


@dataclass
class JobDone:
    job: Job
    seconds: float
    skipped: bool


def _init_worker() -> None:
    os.environ["PLC_THREADS"] = "1"


def run_subprocess(argv: list[str]) -> int:
    """Run `plc ARGV` as a fresh process of this Python, its output going where ours goes."""
    return subprocess.run(
        [sys.executable, "-m", "plc", *argv], stdout=sys.stdout, stderr=sys.stderr
    ).returncode


def _run_job(execute: Execute, argv: list[str], log: str, result: str | None = None) -> float:
    """Run one `plc` command in this worker, its output going to a log file — or, for a job whose
    result is what it prints (`result`, the target), its standard output to that file, written
    whole or not at all (as the Makefile's `> $@.tmp && mv`)."""
    t0 = time.perf_counter()
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    out_path = f"{result}.tmp" if result else log
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with (
        open(log, "w") as f,
        open(out_path, "w") if result else contextlib.nullcontext(f) as out,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(f),
    ):
        try:
            code = execute(argv)
        except PlcError as e:
            print(f"error: {e}")
            raise PlcError(f"`plc {argv[0]}` failed: {e} (log: {log})") from None
        except Exception as e:
            import traceback

            traceback.print_exc()
            raise PlcError(
                f"`plc {argv[0]}` crashed: {type(e).__name__}: {e} (log: {log})"
            ) from None
    if isinstance(code, int) and code != 0:
        raise PlcError(f"`plc {argv[0]}` exited with status {code} (log: {log})")
    if result:
        os.replace(out_path, result)  # a failed job leaves its .tmp, as Make's recipe does
    return time.perf_counter() - t0


def run_plan(
    plan: Plan,
    *,
    workers: int = 2,
    log_dir: str | os.PathLike,
    execute: Execute = run_subprocess,
    on_done: Callable[[JobDone], None] | None = None,
) -> list[JobDone]:
    """Run every job whose target is missing; jobs start once the jobs making their inputs are done."""
    producer = {job.output: job for job in plan.jobs}
    done: set[str] = set()
    results: list[JobDone] = []
    pending = list(plan.jobs)

    def finish(job: Job, seconds: float, skipped: bool) -> None:
        done.add(job.output)
        results.append(JobDone(job, seconds, skipped))
        if on_done:
            on_done(results[-1])

    def ready(job: Job) -> bool:
        return all(d in done or (d not in producer and Path(d).exists()) for d in job.inputs)

    running: dict[Future, Job] = {}
    # spawn, not fork: a parent that already runs torch's thread pools (a notebook, a test) would
    # hand the workers locked mutexes. Each worker pays torch's import once.
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
        while pending or running:
            for job in list(pending):
                if not ready(job):
                    continue
                pending.remove(job)
                if Path(job.output).exists():
                    finish(job, 0.0, True)
                    continue
                # The whole path names the log: several runs each write a c8.pt.
                name = Path(job.output).as_posix().strip("/").replace("/", "--")
                log = str(Path(log_dir) / f"{name}.log")
                result = job.output if job.stdout else None
                running[pool.submit(_run_job, execute, job.command_line(), log, result)] = job
            if not running:
                if pending:
                    missing = sorted({d for j in pending for d in j.inputs if not Path(d).exists()})
                    raise PlcError(
                        f"cannot run {pending[0].output}: missing {', '.join(missing[:3])}"
                    )
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                job = running.pop(fut)
                try:
                    seconds = fut.result()
                except PlcError:
                    for other in running:
                        other.cancel()
                    raise
                finish(job, seconds, False)
    return results
