"""The README and docs/ hold together: every relative link resolves (file and #anchor), every
`plc` command shown in a code block exists with the flags shown, and docs/commands.md lists every
command of the command line."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from conftest import REPO

PAGES = sorted([REPO / "README.md", REPO / "FORMATS.md", *(REPO / "docs").glob("*.md")])
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_slug(h) for h in re.findall(r"^#+ (.*)$", text, re.M)}


def _links(page: Path) -> list[str]:
    return [t for t in LINK.findall(FENCE.sub("", page.read_text())) if "://" not in t]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, broken


def test_the_slug_is_githubs():
    assert _slug("Token store — `data/<lang>.zarr` (`plc/data/tokenstore.py`)") == (
        "token-store--datalangzarr-plcdatatokenstorepy"
    )
    assert _slug("What the demo prints, and how to read it") == (
        "what-the-demo-prints-and-how-to-read-it"
    )


def test_every_doc_page_is_reachable_from_the_readme():
    """From README.md, following relative links between pages, every docs/ page is reached."""
    seen, todo = set(), [REPO / "README.md"]
    while todo:
        page = todo.pop()
        if page in seen or not page.exists() or page.suffix != ".md":
            continue
        seen.add(page)
        todo += [(page.parent / t.partition("#")[0]).resolve() for t in _links(page)]
    assert {p for p in PAGES if p.parent.name == "docs"} <= seen


def _commands():
    """The command line as {"plc a b": click command} for every command and group."""
    import typer.main

    from plc.cli import app

    out = {}

    def walk(cmd, name):
        out[name] = cmd
        for sub_name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{name} {sub_name}")

    walk(typer.main.get_command(app), "plc")
    return out


def _flags(cmd) -> set[str]:
    names = {"--help"}
    for p in cmd.params:
        names.update(getattr(p, "opts", []), getattr(p, "secondary_opts", []))
    return names


def _start(words: list[str]) -> int | None:
    """Where `plc` starts a command in these words: first (after VAR=value words), after `-m`
    (`python -m plc`, `torchrun … -m plc`) or after `do`/`then`/`time`; None if it is none's."""
    for i, word in enumerate(words):
        if word == "plc" and (
            all("=" in w for w in words[:i]) or words[i - 1] in ("-m", "do", "then", "time")
        ):
            return i
    return None


def _invocations(block: str, console: bool) -> list[list[str]]:
    """Each `plc …` command of a code block as its words (a console block's commands are its `$ `
    lines; continued lines joined; shell operators split one line into commands)."""
    lines = block.replace("\\\n", " ").splitlines()
    if console:
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    found = []
    for line in lines:
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lex.whitespace_split, lex.commenters = True, "#"
        words = []
        for word in [*lex, ";"]:
            if word and set(word) <= set(";&|"):
                if (i := _start(words)) is not None:
                    found.append(words[i:])
                words = []
            else:
                words.append(word)
    return found


def _shown(page: Path) -> list[list[str]]:
    """The commands of a page's shell blocks (```bash, ```console; not diagrams or formats)."""
    return [
        words
        for lang, block in FENCE.findall(page.read_text())
        if lang in ("bash", "sh", "shell", "console")
        for words in _invocations(block, console=lang == "console")
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_shown_exists_with_its_flags(page):
    commands = _commands()
    shown = _shown(page)
    if page.name == "README.md":
        assert len(shown) >= 10  # the parser found the README's commands
    wrong = []
    for words in shown:
        name, rest = "plc", words[1:]
        while rest and f"{name} {rest[0]}" in commands:
            name, rest = f"{name} {rest[0]}", rest[1:]
        if name == "plc" and rest and not rest[0].startswith("-"):
            wrong.append(f"{' '.join(words)}: no command {rest[0]!r}")
            continue
        unknown = [
            w for w in rest if w.startswith("-") and w.split("=")[0] not in _flags(commands[name])
        ]
        if unknown:
            wrong.append(f"{' '.join(words)}: {name} has no {unknown}")
    assert not wrong, wrong


def test_the_invocation_parser():
    block = "for l in en vi; do plc shard --lang $l; done   # a comment --x\nplc a -o M && make -j2"
    assert _invocations(block, console=False) == [
        ["plc", "shard", "--lang", "$l"],
        ["plc", "a", "-o", "M"],
    ]
    assert _invocations("$ plc sizes --json\nplc not-a-command", console=True) == [
        ["plc", "sizes", "--json"]
    ]
    other = (
        "ruff check plc tests\nPLC_THREADS=1 torchrun --nproc_per_node 2 -m plc probe \\\n  c.pt"
    )
    assert _invocations(other, console=False) == [["plc", "probe", "c.pt"]]


def test_docs_commands_lists_every_command():
    listed = set(
        re.findall(r"^\| `(plc [a-z -]+)` \|", (REPO / "docs/commands.md").read_text(), re.M)
    )
    leaves = {n for n, c in _commands().items() if not hasattr(c, "commands")}
    assert listed == leaves
