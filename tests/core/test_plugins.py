"""Plugin discovery and lookup (DESIGN §2), with fresh registries and real entry points
written into a temporary directory on ``sys.path``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

import sitq
from sitq import ContextWrapper, NotInstalled, PluginError, TaskQueue, Worker, create_worker
from sitq.plugins import Registry, get_registry
from sitq.testing import tasks

pytestmark = pytest.mark.timeout(60)


class FakeDists:
    """Writes installed-looking distributions (dist-info + modules) into one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, dist: str, version: str, entry_points: dict[str, str],
            modules: dict[str, str]) -> None:
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
        )
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text("[sitq]\n" + lines)
        for module, source in modules.items():
            (self.root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def fake_dists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDists:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delenv("SITQ_DISABLE_PLUGINS", raising=False)
    return FakeDists(root)


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def backend_plugin(scheme: str, extra: str = "") -> str:
    return f"""
        import sitq
        from sitq.backends.memory import MemoryBackend

        {extra}

        @sitq.hookimpl
        def sitq_register_backends(register):
            register({scheme!r}, lambda url, **options: MemoryBackend.from_url(url, **options))
    """


# --------------------------------------------------------------------- the example plugin
def test_example_plugin_is_discovered() -> None:
    registry = Registry()
    assert "example" in registry.names("backend")
    [info] = [p for p in registry.plugins if p.name == "example"]
    assert info.distribution == "sitq-example-plugin"
    assert info.version == "0.1.0"
    assert info.module == "sitq_example_plugin.plugin"
    assert info.registered == {"backend": ["example"]}
    assert info.error is None
    [core] = [p for p in registry.plugins if p.name == "sitq"]
    assert core.distribution == "sitq-core" and core.version == sitq.__version__
    assert registry.plugins[0] is core, "core's own hooks are registered first"
    assert core.registered["backend"] == ["memory"]
    assert sorted(core.registered["serializer"]) == ["cloudpickle", "json", "msgpack", "pickle"]
    assert core.registered["worker"] == ["async"]


@pytest.mark.anyio
@pytest.mark.parametrize("fresh", [True, False])
async def test_example_backend_selected_by_url(fresh: bool) -> None:
    from sitq_example_plugin.backend import ExampleBackend

    url = f"example://plugin-{_uid()}"
    registry = Registry() if fresh else None
    before = ExampleBackend.enqueued
    async with TaskQueue(url, registry=registry) as queue:
        assert type(queue.backend) is ExampleBackend
        job_id = await queue.enqueue(tasks.add, 1, 2)
        async with Worker(url, registry=registry, handle_signals=False):
            result = await queue.get_result(job_id, timeout=10)
    assert ExampleBackend.enqueued == before + 1
    assert result is not None and result.unwrap() == 3


# --------------------------------------------------------------------- failures
def test_plugin_that_fails_to_import_is_reported(fake_dists: FakeDists,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    uid = _uid()
    fake_dists.add("sitq-broken", "1.2.3", {f"broken{uid}": f"broken_mod_{uid}"},
                   {f"broken_mod_{uid}": "raise ImportError('libbroken.so not found')"})
    fake_dists.add("sitq-gone", "0.1", {f"gone{uid}": f"no_such_module_{uid}"}, {})
    fake_dists.add("sitq-fine", "2.0", {f"fine{uid}": f"fine_mod_{uid}"},
                   {f"fine_mod_{uid}": backend_plugin(f"fine{uid}")})
    with caplog.at_level(logging.WARNING, logger="sitq.plugins"):
        registry = Registry()
    by_name = {p.name: p for p in registry.plugins}
    broken = by_name[f"broken{uid}"]
    assert broken.distribution == "sitq-broken" and broken.version == "1.2.3"
    assert broken.error == "ImportError: libbroken.so not found"
    assert broken.registered == {}
    gone = by_name[f"gone{uid}"]
    assert gone.distribution == "sitq-gone"
    assert gone.error is not None and "ModuleNotFoundError" in gone.error
    assert f"broken{uid}" in caplog.text and "libbroken.so not found" in caplog.text
    # The others still work: core, the example plugin, and the fine one.
    assert {"memory", "example", f"fine{uid}"} <= set(registry.names("backend"))
    registry.backend(f"fine{uid}://x")
    # A lookup miss mentions the plugins that failed to load.
    with pytest.raises(NotInstalled) as info:
        registry.backend("nothere://x")
    assert f"broken{uid} (sitq-broken): ImportError: libbroken.so not found" in str(info.value)


def test_plugin_whose_hook_raises_registers_nothing(fake_dists: FakeDists) -> None:
    uid = _uid()
    source = f"""
        import sitq
        from sitq.backends.memory import MemoryBackend

        @sitq.hookimpl
        def sitq_register_backends(register):
            register("half{uid}", MemoryBackend.from_url)
            raise RuntimeError("registration blew up")
    """
    fake_dists.add("sitq-half", "1.0", {f"half{uid}": f"half_mod_{uid}"},
                   {f"half_mod_{uid}": source})
    registry = Registry()
    [info] = [p for p in registry.plugins if p.name == f"half{uid}"]
    assert info.error == "RuntimeError: registration blew up"
    assert f"half{uid}" not in registry.names("backend"), "a failed plugin must not half-load"
    with pytest.raises(NotInstalled, match=f"half{uid}"):
        registry.backend(f"half{uid}://x")


def test_backend_whose_driver_is_missing(fake_dists: FakeDists) -> None:
    """A factory that cannot import its driver gives an install hint, not an ImportError."""
    uid = _uid()
    source = f"""
        import sitq

        def factory(url, **options):
            import no_such_driver_{uid}

        @sitq.hookimpl
        def sitq_register_backends(register):
            register("drv{uid}", factory)
    """
    fake_dists.add("sitq-drv", "3.0", {f"drv{uid}": f"drv_mod_{uid}"},
                   {f"drv_mod_{uid}": source})
    with pytest.raises(NotInstalled) as info:
        TaskQueue(f"drv{uid}://x", registry=Registry())
    message = str(info.value)
    assert f"backend 'drv{uid}' (plugin 'drv{uid}' from sitq-drv) cannot import" in message
    assert f"No module named 'no_such_driver_{uid}'" in message
    assert "pip install --force-reinstall sitq-drv" in message


def test_two_plugins_claiming_one_name(fake_dists: FakeDists) -> None:
    uid = _uid()
    scheme = f"dupe{uid}"
    fake_dists.add("sitq-one", "1.0", {f"one{uid}": f"one_mod_{uid}"},
                   {f"one_mod_{uid}": backend_plugin(scheme)})
    fake_dists.add("sitq-two", "1.0", {f"two{uid}": f"two_mod_{uid}"},
                   {f"two_mod_{uid}": backend_plugin(scheme)})
    registry = Registry()
    with pytest.raises(PluginError) as info:
        registry.backend(f"{scheme}://x")
    message = str(info.value)
    assert f"backend '{scheme}' is registered by more than one plugin" in message
    assert f"'one{uid}'" in message and f"'two{uid}'" in message
    assert "SITQ_DISABLE_PLUGINS" in message
    # Disabling one of them resolves it.
    assert Registry(disabled=[f"two{uid}"]).backend(f"{scheme}://x") is not None


def test_plugin_claiming_a_core_name(fake_dists: FakeDists) -> None:
    uid = _uid()
    fake_dists.add("sitq-evil-memory", "1.0", {f"mem{uid}": f"mem_mod_{uid}"},
                   {f"mem_mod_{uid}": backend_plugin("memory")})
    with pytest.raises(PluginError, match=rf"'sitq', 'mem{uid}'"):
        Registry().backend("memory://x")


def test_misspelled_hook_is_reported(fake_dists: FakeDists) -> None:
    uid = _uid()
    source = """
        import sitq

        @sitq.hookimpl
        def sitq_register_backend(register):
            register("typo", None)
    """
    fake_dists.add("sitq-typo", "1.0", {f"typo{uid}": f"typo_mod_{uid}"},
                   {f"typo_mod_{uid}": source})
    registry = Registry()
    [info] = [p for p in registry.plugins if p.name == f"typo{uid}"]
    assert info.error is not None
    assert "sitq_register_backend" in info.error
    assert "did you mean 'sitq_register_backends'?" in info.error
    assert "typo" not in registry.names("backend")
    assert "example" in registry.names("backend"), "the other plugins still load"


def test_misspelled_hook_in_a_local_plugin() -> None:
    class Local:
        @sitq.hookimpl
        def sitq_register_serialisers(self, register: Any) -> None:
            raise AssertionError("never called")

    registry = Registry(entry_points=False, extra_plugins=[("local", Local())])
    [info] = [p for p in registry.plugins if p.name == "local"]
    assert info.error is not None and "sitq_register_serializers" in info.error
    assert registry.names("backend") == ["memory"]


def test_local_plugin_registers(fake_dists: FakeDists) -> None:
    class Local:
        @sitq.hookimpl
        def sitq_register_serializers(self, register: Any) -> None:
            from sitq.serializers import JsonSerializer

            register("json2", JsonSerializer)

    registry = Registry(entry_points=False, extra_plugins=[("local", Local())])
    assert registry.names("serializer") == ["cloudpickle", "json", "json2", "msgpack", "pickle"]
    assert registry.serializer("json2").name == "json"


def test_disable_plugins_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITQ_DISABLE_PLUGINS", " example , other")
    registry = Registry()
    assert "example" not in registry.names("backend")
    assert "example" not in [p.name for p in registry.plugins]
    with pytest.raises(NotInstalled, match="backend 'example' is not installed"):
        registry.backend("example://x")
    monkeypatch.delenv("SITQ_DISABLE_PLUGINS")
    assert "example" in Registry().names("backend")
    assert "example" not in Registry(disabled=["example"]).names("backend")


# --------------------------------------------------------------------- lookups by name
def test_unknown_serializer_worker_and_propagator() -> None:
    registry = Registry(entry_points=False)
    with pytest.raises(NotInstalled) as info:
        registry.serializer("yaml")
    assert "serializer 'yaml' is not installed" in str(info.value)
    assert "(installed serializers: cloudpickle, json, msgpack, pickle)" in str(info.value)
    with pytest.raises(NotInstalled, match="did you mean 'msgpack'"):
        registry.serializer("msgpak")
    with pytest.raises(NotInstalled, match="worker 'process' is not installed; "
                                           "pip install sitq-workers"):
        create_worker("process", "memory://x", registry=registry)
    with pytest.raises(NotInstalled, match="did you mean 'async'"):
        create_worker("asyncc", "memory://x", registry=registry)
    with pytest.raises(NotInstalled, match="context propagator 'zipkin' is not installed"):
        ContextWrapper("zipkin", registry=registry)
    with pytest.raises(NotInstalled, match="worker 'gevent' is not installed"):
        create_worker("gevent", "memory://x", registry=registry)


def test_create_worker_by_name() -> None:
    worker = create_worker("async", "memory://x", registry=Registry(entry_points=False),
                           concurrency=3, handle_signals=False)
    assert type(worker) is Worker and worker.concurrency == 3


def test_lookup_is_case_insensitive() -> None:
    registry = Registry(entry_points=False)
    assert registry.serializer("JSON").name == "json"
    assert registry.backend("MEMORY://x") is not None


# --------------------------------------------------------------------- `sitq plugins`
def _sitq(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sitq", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_sitq_plugins_json() -> None:
    proc = _sitq("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    plugins = {p["name"]: p for p in json.loads(proc.stdout)}
    assert plugins["sitq"]["distribution"] == "sitq-core"
    assert plugins["sitq"]["version"] == sitq.__version__
    assert "memory" in plugins["sitq"]["registered"]["backend"]
    example = plugins["example"]
    assert (example["distribution"], example["version"]) == ("sitq-example-plugin", "0.1.0")
    assert example["registered"] == {"backend": ["example"]}
    assert example["error"] is None


@pytest.mark.slow
def test_sitq_plugins_table_shows_failures(fake_dists: FakeDists) -> None:
    uid = _uid()
    fake_dists.add("sitq-broken", "1.2.3", {f"broken{uid}": f"broken_mod_{uid}"},
                   {f"broken_mod_{uid}": "raise ImportError('libbroken.so not found')"})
    proc = _sitq("plugins", env={"PYTHONPATH": str(fake_dists.root), "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for text in ("sitq-core", "sitq-example-plugin", "0.1.0", "backends: example",
                 f"broken{uid}", "sitq-broken", "libbroken.so not found"):
        assert text in out, f"{text!r} missing from:\n{out}"


def test_get_registry_is_shared() -> None:
    assert get_registry() is get_registry()
