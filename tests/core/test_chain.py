"""Chains: each step gets the previous value; a failed step fails the rest."""

from __future__ import annotations

import pytest

from sitq import Chain, ConfigurationError, TaskQueue, Worker
from sitq.testing import tasks

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def test_each_step_receives_the_previous_value(mem_url: str) -> None:
    async with TaskQueue(mem_url) as queue:
        chain = Chain(queue).then(tasks.add, 1, 2).then(tasks.multiply, 10).then(tasks.add, 5)
        ids = await chain.ids()
        assert (await queue.stats())["default"].queued == 1  # only the first step is stored
        async with Worker(mem_url, handle_signals=False):
            last = await queue.get_result(ids[-1], timeout=20)
            middle = await queue.get_result(ids[1], timeout=20)
    assert last is not None and last.unwrap() == 35
    assert middle is not None and middle.unwrap() == 30


async def test_a_failed_step_fails_the_rest_of_the_chain(mem_url: str) -> None:
    async with TaskQueue(mem_url) as queue:
        ids = await (Chain(queue).then(tasks.add, 1, 2).then(tasks.fail)
                     .then(tasks.add, 1).then(tasks.add, 2).ids())
        async with Worker(mem_url, handle_signals=False):
            results = [await queue.get_result(i, timeout=20) for i in ids]
    assert [r.status for r in results if r] == ["success", "failed", "failed", "failed"]
    broken = results[1]
    assert broken is not None and broken.error is not None
    assert broken.error.type == "ValueError"  # fail(3) -> ValueError("3")
    for later in results[2:]:
        assert later is not None and later.error is not None
        assert later.error.type == "ChainFailed"
        assert f"step {ids[1]} of this chain failed: ValueError: 3" in later.error.message


async def test_lambdas_and_options_apply_to_every_step(mem_url: str) -> None:
    async with TaskQueue(mem_url) as queue:
        last = await (Chain(queue.options(queue="chains", key="only-the-first"))
                      .then(lambda: 20).then(lambda x: x + 22).enqueue())
        async with Worker(mem_url, queues=["chains"], handle_signals=False):
            result = await queue.get_result(last, timeout=20)
    assert result is not None and result.unwrap() == 42
    assert result.queue == "chains"


async def test_an_empty_chain_is_a_clear_error(mem_url: str) -> None:
    async with TaskQueue(mem_url) as queue:
        with pytest.raises(ConfigurationError, match=r"add steps with \.then"):
            await Chain(queue).enqueue()
        with pytest.raises(ConfigurationError, match="needs a callable"):
            Chain(queue).then(42)  # type: ignore[arg-type]
