"""mkdocs hooks for the sitq docs.

``docs/backends/sqlite.md`` and ``docs/backends/redis.md`` are written on other branches.
Until they are merged, this hook puts a short generated page in their place so the nav
and the links to them hold and ``mkdocs build --strict`` passes. Once a real file
exists, the hook does nothing for it. Nothing is written to docs/.
"""

from __future__ import annotations

from typing import Any

from mkdocs.structure.files import File, Files

PLACEHOLDERS = {
    "backends/sqlite.md": (
        "# SQLite backend\n\n"
        "This page is being written. The SQLite backend (distribution `sitq-sqlite`) is the "
        "default: with no `backend` setting, sitq uses `sqlite:///sitq.db`, a file in the "
        "current directory. URLs follow SQLAlchemy: `sqlite:///relative.db`, "
        "`sqlite:////absolute/path.db`.\n\n"
        "See [Backends](index.md) for the other stores.\n"
    ),
    "backends/redis.md": (
        "# Redis backend\n\n"
        "This page is being written. The Redis backend comes with the distribution "
        "`sitq-redis`: `pip install sitq-redis`, then use a URL such as "
        "`redis://localhost:6379/0`.\n\n"
        "See [Backends](index.md) for the other stores.\n"
    ),
}


def on_files(files: Files, config: Any) -> Files:
    for src_uri, content in PLACEHOLDERS.items():
        if files.get_file_from_path(src_uri) is None:
            files.append(File.generated(config, src_uri, content=content))
    return files
