"""The workflow template ``provenafs run --init-template`` made, remembered per data store.

``~/.config/provenafs/run-templates.json`` (0600, in the 0700 config directory) maps a data
store URL to the MODEL_RUN_WORKFLOW_TEMPLATE handle runs use when neither ``--template`` nor
``-o run_template=`` names one. Only handles are kept here, never a token.
"""

from __future__ import annotations

from provenafs.api.logins import config_dir, read_private_json, write_private_json

__all__ = ["remember_template", "remembered_template"]

_FILE = "run-templates.json"


def remembered_template(source: str) -> str | None:
    found = read_private_json(config_dir() / _FILE).get(source.rstrip("/"))
    return found if isinstance(found, str) else None


def remember_template(source: str, template_id: str) -> None:
    """Remember *template_id* for *source* (atomically, 0600)."""
    path = config_dir() / _FILE
    known = read_private_json(path)
    known[source.rstrip("/")] = template_id
    write_private_json(path, known)
