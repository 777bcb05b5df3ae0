"""The workflow template ``provenafs run --init-template`` made, remembered per data store.

``~/.config/provenafs/run-templates.json`` (0600, in the 0700 config directory) maps a data
store URL to the MODEL_RUN_WORKFLOW_TEMPLATE handle runs use when neither ``--template`` nor
``-o run_template=`` names one. Only handles are kept here, never a token.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from provenafs.api.logins import config_dir

__all__ = ["remember_template", "remembered_template"]

_FILE = "run-templates.json"


def _load(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def remembered_template(source: str) -> str | None:
    return _load(config_dir() / _FILE).get(source.rstrip("/"))


def remember_template(source: str, template_id: str) -> None:
    """Remember *template_id* for *source* (atomically, 0600)."""
    path = config_dir() / _FILE
    known = _load(path)
    known[source.rstrip("/")] = template_id
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(known, file, indent=2, sort_keys=True)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)
