"""What the run tests share: the registry's model runs and jobs, faults, and the run commands.

``RunsApi`` extends the write tests' ``StoreApi`` with what a test checks a run against without
the mount: every MODEL_RUN item carrying a run id, the lodge jobs of a run, dataset versions,
and fault rules (``PUT /_provenafs/faults`` with the admin's token). ``run_command`` runs
``provenafs run`` (or any provenafs command) with a writable mount's environment;
``status_of`` reads ``provenafs status --json``; ``wait_until`` polls.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.e2e.writes_support import API_TIMEOUT, PROVENAFS, StoreApi, WritableMount

__all__ = [
    "RUN_OPTIONS",
    "RunsApi",
    "last_line",
    "python_script",
    "run_command",
    "run_of",
    "start_command",
    "status_of",
    "wait_until",
]

# Runs need no quiet-delay publishing; the crash tests turn it on to show that runs hold drafts.
RUN_OPTIONS = "rw,publish_delay=0"
_T = TypeVar("_T")


class RunsApi(StoreApi):
    """The store's registry and job API as a test reads them (alice's token unless told)."""

    def _all_pages(
        self, path: str, items_key: str, request: dict[str, Any], user: str
    ) -> list[dict[str, Any]]:
        """Every item of a paged list route, following its pagination keys."""
        found: list[dict[str, Any]] = []
        key: Any = None
        for _ in range(1000):
            response = httpx.post(
                f"{self.store.base_url}{path}",
                json={**request, "pagination_key": key},
                headers=self.headers(user),
                timeout=API_TIMEOUT,
            )
            assert response.status_code == 200, response.text
            body = response.json()
            found += body[items_key]
            key = body.get("pagination_key")
            if key is None:
                return found
        raise AssertionError(f"the list of {path} never ended")

    def model_runs(self, run_id: str, user: str = "alice") -> list[dict[str, Any]]:
        """Every MODEL_RUN item whose record carries ``provenafs.run_id = run_id``."""
        items = self._all_pages(
            "/registry/activity/model_run/list", "items", {"page_size": 100}, user
        )
        return [i for i in items if _run_id(i["record"]) == run_id]

    def model_run(self, handle: str, user: str = "alice") -> dict[str, Any]:
        response = httpx.get(
            f"{self.store.base_url}/registry/activity/model_run/fetch",
            params={"id": handle},
            headers=self.headers(user),
            timeout=API_TIMEOUT,
        )
        assert response.status_code == 200, response.text
        item: dict[str, Any] = response.json()["item"]
        return item

    def lodge_jobs(self, run_id: str, user: str = "alice") -> list[dict[str, Any]]:
        """Every model run lodge job of *user* whose record carries the run id."""
        jobs = self._all_pages("/jobs/user/list", "jobs", {"limit": 100}, user)
        return [j for j in jobs if _run_id(j["payload"].get("record") or {}) == run_id]

    def set_fault(self, **rule: Any) -> None:
        response = httpx.put(
            f"{self.store.base_url}/_provenafs/faults",
            json=rule,
            headers=self.headers("admin"),
            timeout=API_TIMEOUT,
        )
        assert response.status_code == 200, response.text

    def clear_faults(self) -> None:
        response = httpx.delete(
            f"{self.store.base_url}/_provenafs/faults",
            headers=self.headers("admin"),
            timeout=API_TIMEOUT,
        )
        assert response.status_code == 200, response.text


def _environment(mount: WritableMount, extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(mount.env)
    env.update(extra or {})
    return env


def _with_mount(mount: WritableMount, args: tuple[str, ...]) -> list[str]:
    if args and args[0] in {"run", "record"}:
        return [args[0], "--mount", str(mount.path), *args[1:]]
    return list(args)


def run_command(
    mount: WritableMount,
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``provenafs ARGS`` with the mount's environment (its config and state dirs); ``run`` and
    ``record`` name the mount (other mounts may exist)."""
    return subprocess.run(
        [*PROVENAFS, *_with_mount(mount, args)],
        env=_environment(mount, env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_command(
    mount: WritableMount, *args: str, log: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """``provenafs ARGS`` in the background, output to *log* (the caller stops it by PID)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [*PROVENAFS, *_with_mount(mount, args)],
            env=_environment(mount, None),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def status_of(mount: WritableMount) -> dict[str, Any]:
    result = run_command(mount, "status", "--json", str(mount.path))
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def run_of(mount: WritableMount, run_id: str) -> dict[str, Any] | None:
    """The run's entry in ``provenafs status --json``, if the daemon knows it."""
    for run in status_of(mount).get("runs") or []:
        if run.get("run_id") == run_id:
            return dict(run)
    return None


def wait_until(
    probe: Callable[[], _T | None], what: str, timeout: float = 60.0, every: float = 0.2
) -> _T:
    """Poll *probe* until it answers something truthy (returned), or fail after *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert lines, "no output"
    return lines[-1].strip()


def python_script(path: Path, source: str) -> list[str]:
    """Write *source* to *path*; the argv that runs it with this interpreter."""
    path.write_text(source)
    return [sys.executable, str(path)]


def _run_id(record: dict[str, Any]) -> str | None:
    """The ``provenafs.run_id`` annotation of a model run record, if any."""
    found = (record.get("annotations") or {}).get("provenafs.run_id")
    return found if isinstance(found, str) else None
