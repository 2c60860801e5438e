"""Settings precedence: argument > SITQ_* environment > [tool.sitq] in pyproject.toml."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from sitq import ConfigurationError, TaskQueue, Worker
from sitq.backends.memory import MemoryBackend
from sitq.config import load_settings


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory with its own pyproject.toml, made the current directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(directory: Path, body: str) -> Path:
    path = directory / "pyproject.toml"
    path.write_text('[project]\nname = "app"\n\n[tool.sitq]\n' + textwrap.dedent(body))
    return path


def test_defaults(project: Path) -> None:
    settings = load_settings()
    assert settings.backend == "sqlite:///sitq.db"
    assert settings.serializer == "cloudpickle"
    assert settings.secret_key == []
    assert settings.queues == ["default"]
    assert (settings.concurrency, settings.kind, settings.lease) == (10, "async", 30.0)
    assert settings.max_lease_expiries == 3
    assert settings.result_ttl == 7 * 24 * 3600
    assert settings.max_payload == 1024 * 1024
    assert settings.app is None and settings.context == []
    assert set(settings.sources.values()) == {"default"}


def test_precedence(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(project, """
        backend = "memory://from-file"
        concurrency = 3
        lease = 12.5
        queues = ["high", "low"]
        serializer = "msgpack"
    """)
    settings = load_settings()
    assert settings.backend == "memory://from-file"
    assert (settings.concurrency, settings.lease, settings.queues) == (3, 12.5, ["high", "low"])
    assert settings.sources["concurrency"] == f"[tool.sitq] {path}"

    monkeypatch.setenv("SITQ_CONCURRENCY", "5")
    monkeypatch.setenv("SITQ_QUEUES", "a, b ,c")
    monkeypatch.setenv("SITQ_BACKEND", "memory://from-env")
    settings = load_settings()
    assert (settings.concurrency, settings.queues) == (5, ["a", "b", "c"])
    assert settings.backend == "memory://from-env"
    assert settings.sources["concurrency"] == "env SITQ_CONCURRENCY"
    assert settings.lease == 12.5, "keys the environment does not set still come from the file"

    settings = load_settings({"concurrency": 7, "backend": None})
    assert settings.concurrency == 7 and settings.sources["concurrency"] == "argument"
    assert settings.backend == "memory://from-env", "an argument of None means 'not given'"


def test_empty_environment_variable_is_ignored(project: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(project, 'backend = "memory://from-file"\n')
    monkeypatch.setenv("SITQ_BACKEND", "")
    assert load_settings().backend == "memory://from-file"


def test_pyproject_is_found_upwards(project: Path) -> None:
    write_config(project, "concurrency = 4\n")
    nested = project / "src" / "pkg"
    nested.mkdir(parents=True)
    import os

    os.chdir(nested)
    assert load_settings().concurrency == 4


def test_public_api_reads_the_settings(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(project, """
        backend = "memory://cfg-file"
        concurrency = 4
        queues = "high,low"
        max_payload = "2 KiB"
        secret_key = "k1,k0"
        lease = 6
        max_lease_expiries = 5
    """)
    worker = Worker(handle_signals=False)
    assert isinstance(worker.backend, MemoryBackend) and worker.backend.name == "cfg-file"
    assert worker.concurrency == 4 and worker.queues == ["high", "low"]
    assert worker.lease == 6.0 and worker.max_lease_expiries == 5
    queue = TaskQueue()
    assert isinstance(queue.backend, MemoryBackend) and queue.backend.name == "cfg-file"
    assert queue.max_payload == 2048
    assert queue.settings.secret_key == ["k1", "k0"]
    monkeypatch.setenv("SITQ_BACKEND", "memory://cfg-env")
    assert TaskQueue().backend.name == "cfg-env"  # type: ignore[attr-defined]
    assert TaskQueue("memory://cfg-arg").backend.name == "cfg-arg"  # type: ignore[attr-defined]
    assert Worker(concurrency=9, handle_signals=False).concurrency == 9


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("concurrency = \"many\"\n", "setting 'concurrency' from [tool.sitq] {path} must be "
                                     "an integer, got 'many'"),
        ("concurrency = 0\n", "setting 'concurrency' from [tool.sitq] {path} must be at least 1"),
        ("concurrency = true\n", "setting 'concurrency' from [tool.sitq] {path} must be an "
                                 "integer, got True"),
        ("concurrency = 2.5\n", "must be an integer, got 2.5"),
        ("lease = -1\n", "setting 'lease' from [tool.sitq] {path} must be greater than 0"),
        ("lease = \"soon\"\n", "setting 'lease' from [tool.sitq] {path} must be a number of "
                               "seconds"),
        ("lease = false\n", "setting 'lease' from [tool.sitq] {path} must be a number of "
                            "seconds, got False"),
        ("queues = 5\n", "setting 'queues' from [tool.sitq] {path} must be a list of strings"),
        ("backend = 5\n", "setting 'backend' from [tool.sitq] {path} must be a non-empty string"),
        ("max_payload = \"big\"\n", "setting 'max_payload' from [tool.sitq] {path}"),
        ("secret_key = 5\n", "setting 'secret_key' from [tool.sitq] {path} must be a list of "
                             "strings or a comma-separated string, got <hidden>"),
    ],
)
def test_type_errors_name_key_and_source(project: Path, body: str, expected: str) -> None:
    path = write_config(project, body)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert expected.format(path=path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_type_errors_from_env_and_arguments(project: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITQ_LEASE", "abc")
    with pytest.raises(ConfigurationError,
                       match="setting 'lease' from env SITQ_LEASE must be a number of seconds, "
                             "got 'abc'"):
        load_settings()
    monkeypatch.delenv("SITQ_LEASE")
    monkeypatch.setenv("SITQ_SECRET_KEY", " , ")
    assert load_settings().secret_key == []
    with pytest.raises(ConfigurationError,
                       match="setting 'concurrency' from argument must be at least 1, got 0"):
        Worker("memory://x", concurrency=0)
    with pytest.raises(ConfigurationError, match="setting 'max_payload' from argument"):
        TaskQueue("memory://x", max_payload=-5)


def test_unknown_keys_are_refused(project: Path) -> None:
    path = write_config(project, "concurrancy = 3\nbackend = \"memory://x\"\n")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    message = str(info.value)
    assert f"unknown key(s) in [tool.sitq] of {path}: concurrancy" in message
    assert "(did you mean 'concurrency'?)" in message
    assert "valid keys: app, backend" in message
    with pytest.raises(ConfigurationError,
                       match=r"unknown setting\(s\) leese \(did you mean 'lease'"):
        load_settings({"leese": 1}, pyproject=False)


def test_invalid_toml_and_non_table(project: Path) -> None:
    (project / "pyproject.toml").write_text("[tool.sitq\nbackend = 1\n")
    with pytest.raises(ConfigurationError, match="is not valid TOML"):
        load_settings()
    (project / "pyproject.toml").write_text('[tool]\nsitq = "memory://x"\n')
    with pytest.raises(ConfigurationError, match=r"\[tool.sitq\] in .* must be a table"):
        load_settings()


def test_sizes(project: Path) -> None:
    for text, size in (("1MiB", 1 << 20), ("64 KiB", 65536), ("2mb", 2_000_000),
                       ("1500", 1500), ("10kb", 10_000)):
        assert load_settings({"max_payload": text}).max_payload == size


@pytest.mark.parametrize(
    ("overrides", "env", "source"),
    [({"queues": []}, {}, "argument"), ({}, {"SITQ_QUEUES": " , "}, "env SITQ_QUEUES")],
)
def test_an_empty_queue_list_is_refused(overrides: dict[str, Any], env: dict[str, str],
                                        source: str) -> None:
    """A worker with no queues would run and never take a job, without a word."""
    with pytest.raises(ConfigurationError,
                       match=f"setting 'queues' from {source} must name at least one queue"):
        load_settings(overrides, env=env, pyproject=False)
