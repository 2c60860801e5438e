"""Reading the docs for the docs tests: fenced code blocks, their markers, headings.

The conventions (also described at the top of ``test_docs_examples.py``):

* Every fenced block whose info string is ``python`` (or ``py``) is a *runnable* block.
* A block whose first line is ``# file: NAME.py`` is not run: it is written to ``NAME.py``
  in the page's working directory (and compiled), so later blocks can import it.
* ``<!-- docs-test: skip REASON -->`` on the line(s) right before a fence opts that one
  block out; REASON is required and shows up in pytest's skip summary.
* ``<!-- docs-test: requires-server HOST:PORT -->`` before a fence: that block and the
  rest of the page run only when HOST:PORT accepts connections (Redis, ...); otherwise
  they are skipped, or fail with ``CI=true``, like the other tests that need a server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

PYTHON_LANGS = {"python", "py"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:(?P<body>.*?)-->\s*$")
_FILE = re.compile(r"^#\s*file:\s*(?P<name>\S+)\s*$")


class DocsSyntaxError(Exception):
    """A marker the harness does not understand, or a fence that never closes."""


@dataclass(frozen=True)
class Block:
    page: Path  # absolute path of the .md file
    line: int  # 1-based line number of the opening fence
    lang: str
    code: str
    skip: str | None = None  # the reason, when opted out
    server: tuple[str, int] | None = None  # (host, port) the block needs

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(DOCS).as_posix()}:{self.line}"

    @property
    def filename(self) -> str | None:
        first = self.code.split("\n", 1)[0]
        match = _FILE.match(first)
        return match.group("name") if match else None

    @property
    def runnable(self) -> bool:
        return self.lang in PYTHON_LANGS


def pages() -> list[Path]:
    """Every Markdown page of the docs, sorted."""
    return sorted(DOCS.rglob("*.md"))


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page`` in order, with their ``docs-test`` markers."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    pending: tuple[int, str, str] | None = None  # (line, marker, argument)
    i = 0
    while i < len(lines):
        text = lines[i]
        directive = _DIRECTIVE.match(text)
        if directive:
            body = directive.group("body").strip()
            word, _, argument = body.partition(" ")
            argument = argument.strip()
            if word not in ("skip", "requires-server"):
                raise DocsSyntaxError(
                    f"{page}:{i + 1}: unknown docs-test marker {body!r}; the markers are "
                    "<!-- docs-test: skip REASON --> and "
                    "<!-- docs-test: requires-server HOST:PORT -->"
                )
            if word == "skip" and not argument:
                raise DocsSyntaxError(f"{page}:{i + 1}: a docs-test skip marker needs a reason")
            if word == "requires-server" and not re.fullmatch(r"[\w.\-]+:\d+", argument):
                raise DocsSyntaxError(
                    f"{page}:{i + 1}: requires-server takes HOST:PORT, got {argument!r}"
                )
            pending = (i + 1, word, argument)
            i += 1
            continue
        fence = _FENCE.match(text)
        if not fence:
            if text.strip() and pending is not None:
                raise DocsSyntaxError(
                    f"{page}:{pending[0]}: a docs-test marker must come right before "
                    "a code fence"
                )
            i += 1
            continue
        indent, marks = fence.group("indent"), fence.group("fence")
        lang = (fence.group("info").strip().split() or [""])[0].lower()
        start = i + 1
        body: list[str] = []
        i += 1
        while i < len(lines):
            closing = lines[i].strip()
            if closing.startswith(marks[0] * len(marks)) and not closing.strip(marks[0]):
                break
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        else:
            raise DocsSyntaxError(f"{page}:{start}: code fence is never closed")
        skip: str | None = None
        server: tuple[str, int] | None = None
        if pending is not None:
            if lang not in PYTHON_LANGS:
                raise DocsSyntaxError(
                    f"{page}:{pending[0]}: docs-test marker before a {lang or 'plain'} "
                    "block; only python blocks run, so only they take markers"
                )
            if pending[1] == "skip":
                skip = pending[2]
            else:
                host, _, port = pending[2].rpartition(":")
                server = (host, int(port))
        out.append(Block(page, start, lang, "\n".join(body) + "\n", skip, server))
        pending = None
        i += 1
    if pending is not None:
        raise DocsSyntaxError(f"{page}:{pending[0]}: docs-test marker with no code block")
    return out


def headings(page: Path, level: int) -> list[str]:
    """The text of every ``#``-heading of exactly ``level`` outside code blocks."""
    found: list[str] = []
    in_code = False
    prefix = "#" * level + " "
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code and line.startswith(prefix):
            found.append(line[len(prefix):].strip())
    return found


def section(page: Path, heading: str) -> str:
    """The text under the heading line ``heading`` (e.g. ``"## sitq worker"``) up to the
    next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = page.read_text(encoding="utf-8").splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        return ""
    out: list[str] = []
    in_code = False
    for line in lines[start + 1:]:
        if _FENCE.match(line):
            in_code = not in_code
        if not in_code and re.match(rf"^#{{1,{level}}} ", line):
            break
        out.append(line)
    return "\n".join(out)
