"""Private Redis servers (standalone and a 3-node cluster) and a TCP proxy for fault tests.

Everything listens on 127.0.0.1 only, on ports picked free by the OS, and is stopped by
the fixture that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free port P below 55536 whose cluster bus port P + 10000 is free too."""
    for _ in range(200):
        port = random.randrange(20000, 45000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if IN_CI:
            pytest.fail(f"{message}; CI=true, so this is a failure")
        pytest.skip(message)
    return path


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on 127.0.0.1:``port`` with its data in ``directory``."""

    def __init__(self, directory: Path, *, appendonly: bool, port: int | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port = port or free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        cmd = [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always", "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"), *self.extra,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not _ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "redis.log")
                raise RuntimeError(f"redis-server did not start: "
                                   f"{log.read_text()[-2000:] if log.exists() else ''}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no shutdown save, like a crash or a power cut of the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def restart(self) -> None:
        self.kill()
        self.start()


class TcpProxy:
    """A loopback TCP proxy with fault knobs: ``reset()`` aborts every connection,
    ``pause()`` stops forwarding (a blackhole), ``resume()`` forwards again."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.server: asyncio.base_events.Server | None = None
        self.conns: set[asyncio.StreamWriter] = set()
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self.conns.update((writer, up_writer))
        pumps = [asyncio.ensure_future(self._pump(reader, up_writer)),
                 asyncio.ensure_future(self._pump(up_reader, writer))]
        self.tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            self.conns.discard(w)
            w.close()
        self.tasks.difference_update(pumps)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()

    def reset(self) -> None:
        for writer in list(self.conns):
            transport = writer.transport
            if transport is not None:
                transport.abort()
        self.conns.clear()

    def pause(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    async def close(self) -> None:
        self.reset()
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class RedisCluster3:
    """A 3-primary Redis Cluster on loopback ports (no replicas), started by the tests."""

    def __init__(self, directory: Path) -> None:
        self.nodes = [
            RedisServer(directory / f"node-{i}", appendonly=False, port=free_cluster_port(),
                        extra=("--cluster-enabled", "yes",
                               "--cluster-config-file", str(directory / f"nodes-{i}.conf"),
                               "--cluster-node-timeout", "5000"))
            for i in range(3)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            message = "redis-cli is not installed (it comes with redis-server / redis-tools)"
            if IN_CI:
                pytest.fail(f"{message}; CI=true, so this is a failure")
            pytest.skip(message)
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run([cli, "--cluster", "create", *addrs, "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while True:
            out = subprocess.run([cli, "-p", str(self.nodes[0].port), "cluster", "info"],
                                 capture_output=True, text=True, timeout=10).stdout
            if "cluster_state:ok" in out:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not become ready: {out}")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
