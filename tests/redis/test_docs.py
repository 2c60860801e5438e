"""Every Python block of docs/backends/redis.md runs as written (against the shared Redis)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import require_server
from tests.redis.conftest import REDIS_HOST, REDIS_PORT

DOC = Path(__file__).resolve().parents[2] / "docs" / "backends" / "redis.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.timeout(60)
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_block_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    code = compile(BLOCKS[index], f"{DOC.name}[block {index}]", "exec")
    exec(code, {"__name__": "__main__"})
    assert capsys.readouterr().out.strip(), "every example prints something"
