"""Every ```python block in docs/ runs, so the examples cannot rot.

Conventions for writing docs (keep examples short, runnable, and on ``memory://NAME``):

* **Runnable blocks.** Each ```python block of a page runs, in order, in one namespace per
  page (a fresh module ``docs_<page>``, so functions defined in a block are importable by
  reference, as in a user's own module). The working directory is a fresh temporary
  directory that is also on ``sys.path``, and every ``SITQ_*`` variable is cleared.
  Top-level ``await`` works: a page's blocks share one event loop. A block without
  ``await`` runs outside the loop, so it may call ``asyncio.run(...)`` itself.
* **File blocks.** A block whose first line is ``# file: tasks.py`` is written to
  ``tasks.py`` in that directory (and compiled) instead of being run; later blocks import
  it (``from tasks import add``) exactly like a user's code would.
* **Opting out.** ``<!-- docs-test: skip REASON -->`` on the line right before a fence
  skips that one block; the reason is required and is listed in pytest's summary
  (``-ra``). Use it sparingly: only for blocks that need a server CI does not have, a
  backend that is not merged yet, or that run forever (``await worker.start()``
  without ``burst=True``). The marker is an HTML comment: visible in the Markdown,
  invisible on the rendered site.
* **Needing a server.** ``<!-- docs-test: requires-server localhost:6379 -->`` before a
  fence: that block and the rest of its page run when the server accepts connections;
  otherwise they are skipped with the reason (and fail with ``CI=true``, as the other
  server tests do). Prefer it to ``skip`` for Redis and other servers CI starts.

Runnable examples use ``memory://NAME``: a ``TaskQueue`` and a ``Worker`` in one process
share the store called NAME. A failing block's traceback points at the line in the .md
file.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import socket
import sys
import types
from pathlib import Path

import pytest
from _docs_support import DOCS, Block, blocks, pages

from sitq.backends import memory

PAGES = {page: blocks(page) for page in pages()}
RUNNABLE = {page: [b for b in bs if b.runnable] for page, bs in PAGES.items()}
OPTED_OUT = [b for bs in RUNNABLE.values() for b in bs if b.skip]


def _page_id(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "page", [p for p, bs in RUNNABLE.items() if any(not b.skip for b in bs)], ids=_page_id
)
def test_page_examples(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_page(page, RUNNABLE[page], tmp_path, monkeypatch)


@pytest.mark.parametrize("block", OPTED_OUT, ids=lambda b: b.where)
def test_opted_out_block(block: Block) -> None:
    compile(block.code, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    pytest.skip(f"docs/{block.where}: {block.skip}")


def test_the_docs_have_examples() -> None:
    """Guards the harness itself: if parsing broke, the tests above would pass vacuously."""
    runnable = [b for bs in RUNNABLE.values() for b in bs if not b.skip]
    assert len(runnable) >= 20, f"only {len(runnable)} runnable python blocks found in docs/"


def run_page(
    page: Path, page_blocks: list[Block], workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))
    for name in list(os.environ):
        if name.startswith("SITQ_"):
            monkeypatch.delenv(name)
    modname = "docs_" + re.sub(r"\W", "_", _page_id(page).removesuffix(".md"))
    module = types.ModuleType(modname)
    module.__file__ = str(workdir / f"{modname}.py")
    environ_before = dict(os.environ)
    modules_before = set(sys.modules)
    stores_before = set(memory._named)
    sys.modules[modname] = module
    try:
        with asyncio.Runner() as runner:
            for block in page_blocks:
                if block.skip:
                    continue
                if block.server is not None:
                    _require_server(block)
                _run_block(block, module, workdir, runner)
    finally:
        os.environ.clear()
        os.environ.update(environ_before)
        # Forget the page's own modules (the namespace, files written by `# file:` blocks)
        # so the next page can write its own tasks.py; keep library modules imported
        # meanwhile (a second copy of e.g. cloudpickle would break pickling by reference).
        for name in set(sys.modules) - modules_before:
            origin = getattr(sys.modules[name], "__file__", None) or ""
            if name == modname or Path(origin).is_relative_to(workdir):
                del sys.modules[name]
        for name in set(memory._named) - stores_before:
            del memory._named[name]


def _require_server(block: Block) -> None:
    assert block.server is not None
    host, port = block.server
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        message = (
            f"docs/{block.where} and the rest of its page need a server at {host}:{port} "
            f"({exc})"
        )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}; CI=true, so an unreachable server is a failure")
    pytest.skip(f"{message}; start it to run these examples")


def _run_block(
    block: Block, module: types.ModuleType, workdir: Path, runner: asyncio.Runner
) -> None:
    # Pad with blank lines so tracebacks show the line numbers of the .md file.
    source = "\n" * block.line + block.code
    filename = block.filename
    if filename is not None:
        compile(source, str(block.page), "exec")
        target = workdir / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.code, encoding="utf-8")
        return
    code = compile(source, str(block.page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    try:
        if code.co_flags & inspect.CO_COROUTINE:
            runner.run(eval(code, module.__dict__))
        else:
            exec(code, module.__dict__)
    except BaseException as exc:
        exc.add_note(f"in the python block at docs/{block.where}")
        raise
