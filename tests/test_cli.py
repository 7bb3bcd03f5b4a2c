"""The command line's conventions: light imports, --json, bad input → one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import assert_bad_input, run_plc

HEAVY = ("torch", "transformers", "datasets", "polars", "zarr", "matplotlib")
LIGHT_COMMANDS = (["--help"], ["sizes"], ["fit-onset", "--help"], ["plot", "--help"])


def test_light_commands_import_no_heavy_library():
    """What keeps `plc --help` fast: the CLI modules and the light commands load none of the heavy
    libraries (the start-up time itself is measured by benchmarks/bench_startup.py)."""
    code = f"""
import json, sys
import plc.errors, plc.sizes, plc.store
from plc.cli import main
seen = {{"import": [m for m in {HEAVY!r} if m in sys.modules]}}
for args in {LIGHT_COMMANDS!r}:
    sys.argv = ["plc", *args]
    try:
        main()
    except SystemExit as e:
        assert e.code == 0, (args, e.code)
    seen[" ".join(args)] = [m for m in {HEAVY!r} if m in sys.modules]
print(json.dumps(seen))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"import": [], **{" ".join(args): [] for args in LIGHT_COMMANDS}}
    assert "Usage: plc" in out.stdout and "5M" in out.stdout  # the commands did run


def test_version_and_sizes_json():
    assert run_plc("--version").stdout.strip() == "plc 0.1.0"
    proc = run_plc("sizes", "--json")
    rows = {r["size"]: r for r in json.loads(proc.stdout)["sizes"]}
    assert rows["314M"]["n_params"] == 314_841_600 and rows["314M"]["n_params_total"] == 511_613_440
    assert rows["5M"]["lr"] == pytest.approx(3e-3)
    small = json.loads(run_plc("sizes", "--vocab-size", "320", "--context", "64", "--json").stdout)
    assert {r["size"]: r for r in small["sizes"]}["nano"]["n_params_total"] == 50_112 + (
        320 + 64
    ) * 64


def test_init_inspect_roundtrip(tmp_path):
    out = tmp_path / "c0.pt"
    proc = run_plc(
        "init",
        "--size",
        "micro",
        "--tokenizer",
        "byte",
        "--context",
        "64",
        "--seed",
        "3",
        "--out",
        out,
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n_params"] == 396_800
    info = json.loads(run_plc("inspect", out, "--json").stdout)
    assert (info["size"], info["vocab_size"], info["context"], info["task_index"]) == (
        "micro",
        320,
        64,
        0,
    )
    assert info["tokenizer"] == "byte" and info["run_id"] == "micro-s3"
    custom = run_plc(
        "init",
        "--layers",
        "2",
        "--d-model",
        "192",
        "--vocab-size",
        "500",
        "--context",
        "16",
        "-o",
        tmp_path / "c.pt",
        "--json",
    )
    assert json.loads(custom.stdout)["size"] == "L2-d192"


def test_bad_inputs_get_one_line_and_exit_2(tmp_path):
    c0 = tmp_path / "c0.pt"
    assert run_plc("init", "--size", "nano", "--vocab-size", "320", "-o", c0).returncode == 0
    assert_bad_input(
        run_plc("init", "--size", "nano", "--vocab-size", "320", "-o", c0), "exists", "--force"
    )
    assert_bad_input(
        run_plc("init", "--size", "7M", "--vocab-size", "320", "-o", tmp_path / "x.pt"),
        "unknown size",
    )
    assert_bad_input(
        run_plc(
            "init",
            "--layers",
            "2",
            "--d-model",
            "100",
            "--vocab-size",
            "320",
            "-o",
            tmp_path / "x.pt",
        ),
        "multiple of 64",
    )
    assert_bad_input(
        run_plc(
            "init",
            "--layers",
            "-1",
            "--d-model",
            "128",
            "--vocab-size",
            "320",
            "-o",
            tmp_path / "x.pt",
        ),
        "positive",
    )
    assert_bad_input(
        run_plc(
            "init",
            "--size",
            "nano",
            "--vocab-size",
            "320",
            "--context",
            "0",
            "-o",
            tmp_path / "x.pt",
        ),
        "positive",
    )
    assert_bad_input(
        run_plc("init", "--size", "nano", "--tokenizer", "klingon", "-o", tmp_path / "x.pt"),
        "unknown tokenizer",
    )
    assert not (tmp_path / "x.pt").exists()
    assert_bad_input(run_plc("inspect", tmp_path / "missing.pt"), "no checkpoint")
    (tmp_path / "t.pt").write_text("text")
    assert_bad_input(run_plc("inspect", tmp_path / "t.pt"), "not a plc checkpoint")
    (tmp_path / "cut.pt").write_bytes(c0.read_bytes()[:1000])
    assert_bad_input(run_plc("inspect", tmp_path / "cut.pt"), "not a plc checkpoint")


def test_usage_errors_exit_2_without_traceback(tmp_path):
    proc = run_plc("inspect", tmp_path / "c.pt", "--no-such-flag")
    assert (
        proc.returncode == 2 and "No such option" in proc.stderr and "Traceback" not in proc.stderr
    )


def test_json_output_is_strict_even_for_nan():
    from plc.cli.common import _finite

    assert json.dumps(_finite({"r2": float("nan"), "x": [1.0, float("inf")]}), allow_nan=False) == (
        '{"r2": null, "x": [1.0, null]}'
    )


def test_debug_shows_the_traceback(tmp_path):
    proc = run_plc("inspect", tmp_path / "missing.pt", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_export_cli(tmp_path):
    c0 = tmp_path / "c0.pt"
    run_plc("init", "--size", "nano", "--vocab-size", "320", "--context", "16", "-o", c0)
    assert run_plc("export", c0, tmp_path / "hf").returncode == 0
    assert (tmp_path / "hf" / "config.json").exists()
    assert_bad_input(run_plc("export", c0, tmp_path / "hf"), "exists")
