"""Benchmark: sitq-rabbitmq against raw aio-pika, in the same run.

Run from the repository root, with RabbitMQ on 127.0.0.1:5672::

    uv run python bench/rabbitmq_bench.py [--jobs 2000] [--trips 200]

* **drain**: N no-op jobs are enqueued (``enqueue_many``), then ONE ``sitq worker
  --burst`` process (async kind, default concurrency 10) runs them all; timed from
  starting the process (start-up included) until it exits with the queue empty. Raw:
  N persistent messages published with confirms, then consumed with manual acks by one
  consumer with prefetch 10 (the same concurrency), timed from opening the connection.
* **round trip**: with an idle worker, one job enqueued and its result awaited, one at a
  time (p50/p95). Raw: publish a request with confirm; a consumer (another connection)
  acks it and publishes a reply with confirm; the client consumes the reply.

Every queue uses a fresh prefix and is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aio_pika
from bench_tasks import noop

from sitq import TaskQueue

URL = os.environ.get("SITQ_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
BENCH = Path(__file__).resolve().parent


async def raw_drain(n: int) -> float:
    name = f"bench-raw-{uuid.uuid4().hex[:8]}"
    conn = await aio_pika.connect(URL)
    try:
        ch = await conn.channel(publisher_confirms=True)
        queue = await ch.declare_queue(name, durable=True, arguments={"x-max-priority": 10})
        body = b"x" * 300  # about a sitq pointer's size
        await asyncio.gather(*(ch.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=name) for _ in range(n)))
        started = time.perf_counter()
        consumer = await aio_pika.connect(URL)
        cch = await consumer.channel()
        await cch.set_qos(prefetch_count=10)
        cq = await cch.get_queue(name, ensure=False)
        done = asyncio.Event()
        count = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal count
            await message.ack()
            count += 1
            if count == n:
                done.set()

        await cq.consume(on_message)
        await done.wait()
        elapsed = time.perf_counter() - started
        await consumer.close()
        await queue.delete()
        return elapsed
    finally:
        await conn.close()


async def raw_round_trips(trips: int) -> list[float]:
    name = f"bench-rt-{uuid.uuid4().hex[:8]}"
    server = await aio_pika.connect(URL)
    client = await aio_pika.connect(URL)
    try:
        sch = await server.channel(publisher_confirms=True)
        requests = await sch.declare_queue(name, durable=True)
        replies = await sch.declare_queue(name + "-reply", durable=True)

        async def serve(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            await sch.default_exchange.publish(
                aio_pika.Message(message.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=name + "-reply")

        await requests.consume(serve)
        cch = await client.channel(publisher_confirms=True)
        inbox: asyncio.Queue[bytes] = asyncio.Queue()

        async def receive(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            inbox.put_nowait(message.body)

        await (await cch.get_queue(replies.name, ensure=False)).consume(receive)
        times = []
        for i in range(trips):
            started = time.perf_counter()
            await cch.default_exchange.publish(
                aio_pika.Message(str(i).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=name)
            await inbox.get()
            times.append(time.perf_counter() - started)
        await requests.delete(if_unused=False)
        await replies.delete(if_unused=False)
        return times
    finally:
        await client.close()
        await server.close()


def _worker(url: str, queue: str, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(BENCH)}
    return subprocess.Popen(
        [sys.executable, "-m", "sitq", "worker", "--backend", url, "--queue", queue, *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def sitq_drain(n: int) -> float:
    url = f"{URL}?prefix=bench{uuid.uuid4().hex[:8]}"
    queue = "drain"
    async with TaskQueue(url) as q:
        await q.options(queue=queue).enqueue_many(noop, [() for _ in range(n)])
        started = time.perf_counter()
        proc = _worker(url, queue, "--burst")
        await asyncio.to_thread(proc.wait, 1800)
        elapsed = time.perf_counter() - started
        stats = (await q.stats([queue]))[queue]
        assert stats.queued == 0 and stats.running == 0, stats
        await q.purge([queue])
        return elapsed


async def sitq_round_trips(trips: int) -> list[float]:
    url = f"{URL}?prefix=bench{uuid.uuid4().hex[:8]}"
    queue = "rt"
    async with TaskQueue(url) as q:
        bound = q.options(queue=queue)
        await q.get_result(await bound.enqueue(noop), timeout=0)  # declares the queue
        proc = _worker(url, queue)
        try:
            first = await bound.enqueue(noop)
            assert await q.get_result(first, timeout=60) is not None, "worker never started"
            times = []
            for _ in range(trips):
                started = time.perf_counter()
                job_id = await bound.enqueue(noop)
                result = await q.get_result(job_id, timeout=30)
                assert result is not None and result.status == "success"
                times.append(time.perf_counter() - started)
            return times
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 60)
            await q.purge([queue])


def _ms(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q * 100) - 1] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--trips", type=int, default=200)
    args = parser.parse_args()
    print(f"aio-pika {aio_pika.__version__}, {args.jobs} jobs, {args.trips} round trips")
    raw = await raw_drain(args.jobs)
    ours = await sitq_drain(args.jobs)
    print(f"drain   raw aio-pika {args.jobs / raw:8.0f} jobs/s | sitq (from process start) "
          f"{args.jobs / ours:6.0f} jobs/s | ratio {raw / ours:.3f}")
    raw_rt = await raw_round_trips(args.trips)
    ours_rt = await sitq_round_trips(args.trips)
    print(f"round trip p50  raw {_ms(raw_rt, .5):6.2f} ms | sitq {_ms(ours_rt, .5):6.2f} ms")
    print(f"round trip p95  raw {_ms(raw_rt, .95):6.2f} ms | sitq {_ms(ours_rt, .95):6.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
