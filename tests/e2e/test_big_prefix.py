"""A handle prefix with 2,000 datasets on a real mount: ``ls -l`` of it and of ``by-name``.

The store is a private one: the seed plus 2,000 datasets alice mints through the data store's
own mint route. ``ls -l`` must cost only the walk of the dataset list (no record fetch, no
credential call, no S3 request: the mount's own counters in ``.provenafs/status.json``) and
show exactly the names the list holds, with the modes docs/SEMANTICS.md promises for entries
answered from the list. Expected values come from the data store's answers, not the mount.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from provenafs.server.seed import sample_collection_format
from tests.conftest import LocalStore, require_fuse, start_local_store
from tests.e2e.conftest import Mount, start_mount, stop_mount

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

PREFIX = "10378.1"
MINTED = 2000
SLASH = "\u2215"


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    """The seeded store plus MINTED datasets of alice's, minted over HTTP."""
    require_fuse()
    store = start_local_store(tmp_path_factory.mktemp("big") / "data")
    try:
        token = store.token("alice")
        with httpx.Client(
            base_url=store.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=120
        ) as client:

            def mint(n: int) -> str:
                document = sample_collection_format(f"Bulk {n:05d}").model_dump(mode="json")
                response = client.post("/register/mint-dataset", json=document)
                assert response.status_code == 200, response.text
                return str(response.json()["handle"])

            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                handles = list(pool.map(mint, range(MINTED)))
        assert len(set(handles)) == MINTED
        yield store
    finally:
        store.stop()


def listed_items(store: LocalStore) -> list[dict[str, Any]]:
    """Every item of the dataset list, as alice's token sees it (all pages)."""
    items: list[dict[str, Any]] = []
    key = None
    with httpx.Client(base_url=store.base_url, timeout=120) as client:
        while True:
            body = client.post(
                "/registry/items/list",
                json={"page_size": 100, "pagination_key": key},
                headers={"Authorization": f"Bearer {store.token('alice')}"},
            ).json()
            items += body["items"]
            key = body.get("pagination_key")
            if not key:
                return items


def ls_l(mount: Mount, directory: str) -> dict[str, tuple[str, int, str | None]]:
    """``ls -l`` of *directory*: name -> (mode string, size, link target)."""
    result = subprocess.run(
        ["ls", "-l", "--time-style=+%s", directory],
        cwd=mount.path,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    entries = {}
    for line in result.stdout.splitlines()[1:]:  # after "total N"
        mode, _links, _user, _group, size, _mtime, rest = line.split(maxsplit=6)
        name, _, target = rest.partition(" -> ")
        entries[name] = (mode, int(size), target or None)
    return entries


def status(mount: Mount) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((mount.path / ".provenafs" / "status.json").read_bytes())
    return document


def assert_only_the_list_was_asked(mount: Mount) -> None:
    document = status(mount)
    calls = dict(document["data_store_calls"])
    assert calls.pop("check_general_access", 0) <= 1  # who the mount is: asked once, at start
    assert set(calls) == {"list_page"}, document["data_store_calls"]
    assert document["credentials"]["read_calls"] == 0
    assert document["credentials"]["held"] == 0
    assert document["s3"]["requests"] == 0
    assert document["catalog"]["record_fetches"] == 0


def fetch_document(store: LocalStore, handle: str) -> dict[str, Any]:
    response = httpx.get(
        f"{store.base_url}/registry/items/fetch-dataset",
        params={"handle_id": handle},
        headers={"Authorization": f"Bearer {store.token('alice')}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    body.pop("status", None)
    return body


def render_sidecar(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def test_ls_l_of_a_big_prefix_and_of_by_name_costs_only_the_list(
    big_store: LocalStore, tmp_path: Path
) -> None:
    items = listed_items(big_store)
    mine = [item for item in items if item["owner_username"] == "alice"]
    assert len(mine) >= MINTED
    mount = start_mount(big_store, tmp_path / "mnt")
    try:
        entries = ls_l(mount, PREFIX)
        assert_only_the_list_was_asked(mount)

        expected: dict[str, tuple[str, str | None]] = {}
        by_handle = {item["id"]: item for item in items}
        for item in items:
            prefix, suffix = item["id"].split("/")
            if prefix != PREFIX:
                continue
            own = item["owner_username"] == "alice"
            latest = item["id"]
            while (by_handle[latest].get("versioning_info") or {}).get("next_version"):
                latest = by_handle[latest]["versioning_info"]["next_version"]
            is_latest = latest == item["id"]
            # From the list: the owner's roles are all roles (and the lock is taken as off);
            # anyone else's dataset shows no write bits until its record is fetched.
            expected[suffix] = ("drwxr-xr-x" if own and is_latest else "dr-xr-xr-x", None)
            expected[f"{suffix}.json"] = ("-rw-r--r--" if own else "-r--r--r--", None)
            expected[f"{suffix}@latest"] = ("lrwxrwxrwx", latest.split("/")[1])
        assert {name: (mode, target) for name, (mode, _, target) in entries.items()} == expected
        for item in mine[:50]:  # the owner's estimate is the sidecar's size to the byte
            document = fetch_document(big_store, item["id"])
            if not document["locked"]:
                suffix = item["id"].split("/")[1]
                assert entries[f"{suffix}.json"][1] == len(render_sidecar(document)), item["id"]

        names = ls_l(mount, "by-name")
        assert_only_the_list_was_asked(mount)
        latest_items = sorted(
            (item for item in items if not (item.get("versioning_info") or {}).get("next_version")),
            key=lambda item: (item["created_timestamp"], item["id"]),
        )
        expected_names: dict[str, tuple[str, str | None]] = {}
        for item in latest_items:
            name = item["display_name"].replace("/", SLASH).strip()
            if name in expected_names:
                name = f"{name} ({item['id'].replace('/', SLASH)})"
            expected_names[name] = ("lrwxrwxrwx", f"../{item['id']}")
        assert {name: (mode, target) for name, (mode, _, target) in names.items()} == (
            expected_names
        )
        assert sum(name.startswith("Bulk ") for name in names) == MINTED
    finally:
        stop_mount(mount)


def test_inside_a_listed_dataset_the_first_access_costs_one_record_and_one_credential_call(
    big_store: LocalStore, tmp_path: Path
) -> None:
    handle = next(
        item["id"] for item in listed_items(big_store) if item["owner_username"] == "alice"
    )
    mount = start_mount(big_store, tmp_path / "mnt")
    try:
        ls_l(mount, PREFIX)
        data = (mount.path / handle / "metadata.json").read_bytes()
        assert json.loads(data)["dataset_info"]["name"].startswith(("Bulk ", "Reef", "Versioned"))
        calls = dict(status(mount)["data_store_calls"])
        assert calls.pop("check_general_access", 0) <= 1  # who the mount is, asked at start
        assert calls.get("fetch_dataset") == 1
        assert calls.get("read_credentials") == 1
        assert set(calls) == {"list_page", "fetch_dataset", "read_credentials"}
    finally:
        stop_mount(mount)


def test_a_sidecar_locked_after_the_listing_is_read_whole_by_every_reader(
    big_store: LocalStore, tmp_path: Path
) -> None:
    handle = next(
        item["id"]
        for item in listed_items(big_store)
        if item["display_name"] == f"Bulk {MINTED - 1:05d}"
    )
    suffix = handle.split("/")[1]
    mount = start_mount(big_store, tmp_path / "mnt")
    try:
        estimated = ls_l(mount, PREFIX)[f"{suffix}.json"][1]
        locked = big_store.serve_cli("lock", handle)
        assert locked.returncode == 0, locked.stderr
        expected = render_sidecar(fetch_document(big_store, handle))
        assert b'"locked": true' in expected
        assert len(expected) == estimated - 1  # listed as unlocked: "false" is one byte longer
        sidecar = mount.path / PREFIX / f"{suffix}.json"
        cat = subprocess.run(["cat", str(sidecar)], capture_output=True, check=True, timeout=60)
        assert cat.stdout == expected
        copied = tmp_path / "copy.json"
        shutil.copy(sidecar, copied)
        assert copied.read_bytes() == expected
        subprocess.run(["cp", str(sidecar), str(tmp_path / "cp.json")], check=True, timeout=60)
        assert (tmp_path / "cp.json").read_bytes() == expected
        with open(sidecar, encoding="utf-8") as handle_file:
            assert json.load(handle_file)["locked"] is True
        exact = subprocess.run(
            ["stat", "--cached=never", "-c", "%s", str(sidecar)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert int(exact.stdout) == len(expected)  # asked again: exact once fetched
    finally:
        stop_mount(mount)
