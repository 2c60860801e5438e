"""The reference pages cover what the code has: hooks, settings, CLI commands, errors.

Each test fails when something is added to the code without docs (or documented after it
was removed), naming what is missing and where its section belongs.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect

import pytest
from _docs_support import DOCS, ROOT, headings, section

import sitq
from sitq import cli, errors, hookspecs
from sitq.config import DEFAULTS, setting_names

PLUGINS = DOCS / "plugins.md"
CONFIGURATION = DOCS / "configuration.md"
CLI = DOCS / "cli.md"
ERRORS = DOCS / "errors.md"
CONCEPTS = DOCS / "concepts.md"
WORKERS = DOCS / "workers.md"


def _hooks() -> list[str]:
    return sorted(
        name
        for name, obj in vars(hookspecs).items()
        if inspect.isfunction(obj) and getattr(obj, "sitq_spec", None) is not None
    )


def test_hookspecs_are_found() -> None:
    assert len(_hooks()) >= 4


@pytest.mark.parametrize("hook", _hooks())
def test_every_hook_has_a_section(hook: str) -> None:
    assert hook in headings(PLUGINS, 2), (
        f"hook {hook} (sitq/hookspecs.py) has no '## {hook}' section in docs/plugins.md; "
        "add one: what register() takes, what the registered object must do, an example"
    )
    body = section(PLUGINS, f"## {hook}")
    assert "```python" in body, f"the '## {hook}' section of docs/plugins.md has no example"


def test_no_section_for_a_hook_that_does_not_exist() -> None:
    documented = {h for h in headings(PLUGINS, 2) if h.startswith("sitq_")}
    assert documented - set(_hooks()) == set(), "docs/plugins.md documents unknown hooks"


@pytest.mark.parametrize("key", setting_names())
def test_every_setting_is_documented(key: str) -> None:
    assert key in headings(CONFIGURATION, 3), (
        f"setting {key!r} (sitq.config.Settings) has no '### {key}' section in "
        "docs/configuration.md"
    )
    body = section(CONFIGURATION, f"### {key}")
    env = f"SITQ_{key.upper()}"
    assert env in body, f"the '### {key}' section does not name its variable {env}"
    assert "Default" in body, f"the '### {key}' section does not give its default"
    assert f"{key} =" in body, f"the '### {key}' section has no [tool.sitq] example"


def test_setting_defaults_match_the_docs() -> None:
    page = CONFIGURATION.read_text()
    expected = {
        "backend": "`sqlite:///sitq.db`",
        "serializer": "`cloudpickle`",
        "concurrency": "`10`",
        "kind": "`async`",
        "lease": "`30`",
        "max_lease_expiries": "`3`",
        "queues": '`["default"]`',
    }
    for key, shown in expected.items():
        assert shown in section(CONFIGURATION, f"### {key}"), (key, shown)
    # the expectations above must follow the code, too
    assert DEFAULTS.backend == "sqlite:///sitq.db" and DEFAULTS.serializer == "cloudpickle"
    assert (DEFAULTS.concurrency, DEFAULTS.kind, DEFAULTS.lease) == (10, "async", 30.0)
    assert DEFAULTS.max_lease_expiries == 3 and DEFAULTS.queues == ["default"]
    assert DEFAULTS.result_ttl == 7 * 24 * 3600 and "604800" in page
    assert DEFAULTS.max_payload == 1024 * 1024 and "1 MiB" in page


def test_no_section_for_a_setting_that_does_not_exist() -> None:
    body = section(CONFIGURATION, "## Settings")
    documented = {line[4:].strip() for line in body.splitlines() if line.startswith("### ")}
    assert documented, "docs/configuration.md has no '## Settings' section with '### key's"
    assert documented - set(setting_names()) == set()


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli._parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("sitq's parser has no subcommands")


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_cli_command_is_documented(command: str) -> None:
    heading = f"sitq {command}"
    assert heading in headings(CLI, 2), f"`{heading}` has no '## {heading}' section in cli.md"
    body = section(CLI, f"## {heading}")
    sub = _subcommands()[command]
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        names = action.option_strings or [action.dest.upper()]
        assert any(name in body for name in names), (
            f"option {names[0]} of `{heading}` is not described in its section of docs/cli.md"
        )


def test_no_section_for_a_command_that_does_not_exist() -> None:
    documented = {h.removeprefix("sitq ") for h in headings(CLI, 2) if h.startswith("sitq ")}
    assert documented - set(_subcommands()) == set()


@pytest.mark.parametrize("name", errors.__all__)
def test_every_exception_is_documented(name: str) -> None:
    assert name in headings(ERRORS, 3), f"{name} (sitq/errors.py) has no '### {name}' in errors.md"
    assert getattr(sitq, name) is getattr(errors, name), f"{name} is not re-exported by sitq"


def test_every_job_option_is_documented() -> None:
    options = [f.name for f in dataclasses.fields(sitq.JobOptions)]
    body = section(CONCEPTS, "## Job options")
    missing = [name for name in options if f"`{name}`" not in body]
    assert not missing, f"job options missing from '## Job options' in concepts.md: {missing}"


def test_every_worker_argument_is_documented() -> None:
    internal = {"self", "registry", "settings"}
    params = [p for p in inspect.signature(sitq.Worker.__init__).parameters if p not in internal]
    body = section(WORKERS, "## Worker arguments")
    missing = [name for name in params if f"`{name}`" not in body]
    assert not missing, (
        f"Worker arguments missing from '## Worker arguments' in workers.md: {missing}"
    )


def test_plugin_tutorial_shows_the_real_example_plugin() -> None:
    """The tutorial quotes examples/sitq-example-plugin verbatim, so it cannot drift."""
    text = PLUGINS.read_text()
    package = ROOT / "examples" / "sitq-example-plugin"
    for path in sorted((package / "src" / "sitq_example_plugin").glob("*.py")):
        if path.name == "__init__.py":
            continue
        assert f"```python\n{path.read_text()}```" in text, (
            f"docs/plugins.md no longer shows {path.relative_to(ROOT)} as it is; "
            "paste the current file into the tutorial"
        )
    entry_point = '[project.entry-points.sitq]\nexample = "sitq_example_plugin.plugin"'
    assert entry_point in (package / "pyproject.toml").read_text()
    assert entry_point in text
