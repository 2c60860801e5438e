"""CloudpickleSerializer's pickle-first fast path writes exactly what is safe to load."""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import Any

import cloudpickle

from sitq.serializers import CloudpickleSerializer
from sitq.testing import tasks


def _load_in_fresh_process(data: bytes) -> str:
    code = "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read())())"
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True,
                         check=True, timeout=60)
    return out.stdout.decode().strip()


def test_plain_data_and_importable_functions_use_pickle() -> None:
    s = CloudpickleSerializer()
    for obj in (["sitq.testing.tasks:add", [1, 2], {}], {"a": (1, 2.5, b"x")}, None,
                tasks.add):
        assert s.dumps(obj) == pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        assert s.loads(s.dumps(obj)) == obj


def test_lambdas_and_closures_go_by_value() -> None:
    s = CloudpickleSerializer()
    offset = 10
    assert s.loads(s.dumps(lambda x: x + offset))(1) == 11

    def inner() -> str:
        return "closure"

    assert _load_in_fresh_process(s.dumps(inner)) == "closure"


def test_main_module_objects_go_by_value() -> None:
    s = CloudpickleSerializer()
    main = sys.modules["__main__"]

    def from_main() -> str:
        return "from main"

    from_main.__module__ = "__main__"
    from_main.__qualname__ = from_main.__name__ = "_sitq_fastpath_from_main"
    main._sitq_fastpath_from_main = from_main
    try:
        plain = pickle.dumps(from_main)  # by reference: a fresh __main__ lacks it
        data = s.dumps(from_main)
        assert data != plain
        assert _load_in_fresh_process(data) == "from main"
    finally:
        delattr(main, "_sitq_fastpath_from_main")


def test_modules_registered_by_value_are_respected() -> None:
    s = CloudpickleSerializer()
    cloudpickle.register_pickle_by_value(tasks)
    try:
        data: Any = s.dumps(tasks.echo)
        assert data != pickle.dumps(tasks.echo, protocol=pickle.HIGHEST_PROTOCOL)
        assert s.loads(data)(1, a=2) == {"args": [1], "kwargs": {"a": 2}}
    finally:
        cloudpickle.unregister_pickle_by_value(tasks)
    assert s.dumps(tasks.echo) == pickle.dumps(tasks.echo, protocol=pickle.HIGHEST_PROTOCOL)



def test_data_that_merely_mentions_main_still_uses_pickle() -> None:
    s = CloudpickleSerializer()
    for obj in (["domain__name"], {"x_main__": 1}):  # "main__", but neither module name
        assert s.dumps(obj) == pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    for obj in ("__main__", ["__mp_main__"]):  # the names themselves: round trip still
        assert s.loads(s.dumps(obj)) == obj
