"""``provenafs serve`` as a process: cold start, restart persistence, seeding, admin subcommands.

Prints the measured cold start times (to healthy) for the closing note; asserts no timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LocalStore, free_port, start_local_store

pytestmark = pytest.mark.s3


def children_of(pid: int) -> set[int]:
    """PIDs whose parent is *pid* (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("PPid:") and int(line.split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def serve_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "provenafs", "serve", *args, "--data-dir", str(data_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def fetch(store: LocalStore, token: str, handle: str) -> httpx.Response:
    return httpx.get(
        f"{store.base_url}/registry/items/fetch-dataset",
        params={"handle_id": handle},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def all_ids(store: LocalStore, token: str) -> list[str]:
    ids: list[str] = []
    body: dict[str, Any] = {"page_size": 100}
    while True:
        page = httpx.post(
            f"{store.base_url}/registry/items/list",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ).json()
        ids += [item["id"] for item in page["items"]]
        if page["pagination_key"] is None:
            return ids
        body = {"page_size": 100, "pagination_key": page["pagination_key"]}


def test_cold_start_without_seed(tmp_path: Path) -> None:
    started = time.monotonic()
    store = start_local_store(
        tmp_path / "cold", "--fault", "path_prefix=/check-access,fail_next=1,status=502", seed=False
    )
    elapsed = time.monotonic() - started
    try:
        print(f"\ncold start of provenafs serve (no seed) to healthy: {elapsed:.2f} s")
        assert httpx.get(store.base_url + "/").json() == {"message": "Health check successful."}
        assert (store.data_dir / "registry.sqlite").exists()
        assert not (store.data_dir / "seed-manifest.json").exists()
        info = json.loads((store.data_dir / "server.json").read_text())
        assert info["url"] == store.base_url
        # the --fault flag is live from the start; the realm is never faulted
        assert httpx.get(store.base_url + "/check-access/check-general-access").status_code == 502
        assert httpx.get(store.base_url + "/check-access/check-general-access").status_code == 401
        assert httpx.get(store.base_url + "/auth/realms/provena").status_code == 200
        # a second server on the same port is refused before it starts anything
        port = store.base_url.rsplit(":", 1)[1]
        cmd = [sys.executable, "-m", "provenafs", "serve", "--data-dir", str(tmp_path / "other")]
        result = subprocess.run(
            [*cmd, "--port", port], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 2
        assert "cannot listen" in result.stderr
        assert not (tmp_path / "other" / "s3").exists()
    finally:
        store.stop()
    assert store.process.returncode == 0
    assert not (store.data_dir / "server.json").exists()


@pytest.fixture(scope="module")
def seeded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve") / "data"


@pytest.fixture(scope="module")
def store(seeded_dir: Path) -> Iterator[LocalStore]:
    started = time.monotonic()
    running = start_local_store(seeded_dir)
    print(f"\ncold start of provenafs serve --seed to healthy: {time.monotonic() - started:.2f} s")
    try:
        yield running
    finally:
        running.stop()


def test_seed_manifest(store: LocalStore) -> None:
    manifest = store.manifest()
    datasets = manifest["datasets"]
    assert len(datasets) >= 8
    assert {entry["owner"] for entry in datasets.values()} == {"alice", "bob", "carol"}
    assert {"alice", "bob", "carol", "admin"} <= set(manifest["users"])
    big = datasets["big-binary"]["files"]["blob.bin"]
    assert big["size"] >= 64 << 20
    assert len(datasets["many-files"]["files"]) > 1000
    reef = datasets["reef-temperatures"]
    assert reef["files"]["empty.dat"]["size"] == 0
    assert "données été/mesures à Cairns.csv" in reef["files"]
    assert "notes with spaces.txt" in reef["files"]
    assert reef["dirs"] == ["raw/empty/"]
    admin = json.loads((store.data_dir / "s3-admin.json").read_text())
    assert set(admin) >= {"endpoint_url", "access_key_id", "secret_access_key", "bucket", "region"}


def test_seeded_states(store: LocalStore) -> None:
    token = store.token("admin")
    datasets = store.manifest()["datasets"]
    locked = fetch(store, token, datasets["locked"]["handle"]).json()
    assert locked["locked"] is True
    released = fetch(store, token, datasets["released"]["handle"]).json()["item"]
    assert released["release_status"] == "RELEASED"
    history = fetch(store, token, datasets["history"]["handle"]).json()["item"]
    assert [h["reason"] for h in history["history"]] == [
        "Add keywords",
        "Fix description typo",
        "Initial record creation",
    ]
    chain = [datasets[f"versioned-v{n}"]["handle"] for n in (1, 2, 3)]
    infos = [fetch(store, token, h).json()["item"]["versioning_info"] for h in chain]
    assert [info["version"] for info in infos] == [1, 2, 3]
    assert [info["next_version"] for info in infos] == [chain[1], chain[2], None]
    assert [info["previous_version"] for info in infos] == [None, chain[0], chain[1]]
    assert datasets["versioned-v1"]["files"] != datasets["versioned-v3"]["files"]


def test_admin_subcommands(store: LocalStore) -> None:
    data_dir = store.data_dir
    result = serve_cli(
        data_dir, "user", "add", "dave", "--email", "dave@example.org", "--roles", "r,w"
    )
    assert result.returncode == 0, result.stderr
    listing = serve_cli(data_dir, "user", "list").stdout
    assert "dave\tdave@example.org\tentity-registry-read,entity-registry-write" in listing
    assert serve_cli(data_dir, "group", "add", "divers", "--members", "dave,bob").returncode == 0
    assert "divers\tbob,dave" in serve_cli(data_dir, "group", "list").stdout

    token = serve_cli(data_dir, "token", "dave")
    assert token.returncode == 0
    assert len(token.stdout.strip().splitlines()) == 1
    dave = token.stdout.strip()
    handle = store.manifest()["datasets"]["private-bob"]["handle"]
    assert fetch(store, dave, handle).status_code == 401
    granted = serve_cli(data_dir, "access", "private-bob", "--group", "divers=metadata-read")
    assert granted.returncode == 0, granted.stderr
    assert json.loads(granted.stdout)["groups"] == {"divers": ["metadata-read"]}
    assert fetch(store, dave, handle).json()["roles"] == ["metadata-read"]

    assert serve_cli(data_dir, "lock", handle, "--reason", "hold").returncode == 0
    assert fetch(store, dave, handle).json()["locked"] is True
    assert serve_cli(data_dir, "unlock", "private-bob").returncode == 0
    assert fetch(store, dave, handle).json()["locked"] is False

    assert serve_cli(data_dir, "release", "request", "private-bob").returncode == 0
    assert fetch(store, dave, handle).json()["item"]["release_status"] == "PENDING"
    approved = serve_cli(data_dir, "release", "approve", "private-bob")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip().endswith("RELEASED")


def test_mint_subcommand(store: LocalStore, tmp_path: Path) -> None:
    admin = store.token("admin")
    template = fetch(store, admin, store.manifest()["datasets"]["history"]["handle"])
    collection_format = template.json()["item"]["collection_format"]
    collection_format["dataset_info"]["name"] = "Minted from the CLI"
    document = tmp_path / "cf.json"
    document.write_text(json.dumps(collection_format))
    result = serve_cli(store.data_dir, "mint", str(document), "--user", "carol")
    assert result.returncode == 0, result.stderr
    handle = result.stdout.strip()
    item = fetch(store, admin, handle).json()["item"]
    assert item["display_name"] == "Minted from the CLI"
    assert item["owner_username"] == "carol"
    document.write_text("{broken")
    assert serve_cli(store.data_dir, "mint", str(document), "--user", "carol").returncode == 2


@pytest.mark.parametrize(
    "args",
    [
        ("token", "nobody"),
        ("user", "add", "eve", "--roles", "r,x"),
        ("group", "add", "g", "--members", "ghost"),
        ("access", "10378.1/1", "--general", "metadata-read"),
        ("access", "reef-temperatures", "--general", "superpowers"),
        ("lock", "no-such-seed"),
        ("release", "approve", "reef-temperatures"),
        ("device", "approve", "ABCD-EFGH", "--user", "alice"),
        ("mint", "/nonexistent.json", "--user", "alice"),
        ("user", "frobnicate"),
    ],
)
def test_bad_input_exits_2(store: LocalStore, args: tuple[str, ...]) -> None:
    result = serve_cli(store.data_dir, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr


def test_faults_subcommand(store: LocalStore) -> None:
    result = serve_cli(
        store.data_dir, "faults", "set", "--path-prefix", "/check-access", "--fail-next", "1"
    )
    assert result.returncode == 0, result.stderr
    headers = {"Authorization": f"Bearer {store.token('alice')}"}
    url = f"{store.base_url}/check-access/check-read-access"
    assert httpx.get(url, headers=headers).status_code == 503
    assert httpx.get(url, headers=headers).status_code == 200
    assert serve_cli(store.data_dir, "faults", "clear").returncode == 0
    assert json.loads(serve_cli(store.data_dir, "faults", "list").stdout) == {"faults": []}


def test_device_approve_subcommand(store: LocalStore) -> None:
    """The device flow end to end, approved with ``provenafs serve device approve``."""
    realm = f"{store.base_url}/auth/realms/provena/protocol/openid-connect"
    started = httpx.post(f"{realm}/auth/device", data={"client_id": "client-tools"}, timeout=30)
    assert started.status_code == 200, started.text
    grant = started.json()
    poll = {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": grant["device_code"],
        "client_id": "client-tools",
    }
    pending = httpx.post(f"{realm}/token", data=poll, timeout=30)
    assert pending.json()["error"] == "authorization_pending"
    result = serve_cli(store.data_dir, "device", "approve", grant["user_code"], "--user", "carol")
    assert result.returncode == 0, result.stderr
    tokens = httpx.post(f"{realm}/token", data=poll, timeout=30).json()
    check = httpx.get(
        f"{store.base_url}/check-access/check-write-access",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=30,
    )
    assert check.status_code == 200
    assert check.json()["username"] == "carol"


def test_restart_keeps_records_and_tokens(store: LocalStore, seeded_dir: Path) -> None:
    """Stop by PID, start again on the same data dir (seeding again): nothing lost or added."""
    admin = store.token("admin")
    offline = store.token("alice", offline=True)
    before_ids = sorted(all_ids(store, admin))
    handle = store.manifest()["datasets"]["reef-temperatures"]["handle"]
    before_item = fetch(store, admin, handle).json()
    manifest_before = store.manifest()
    children = children_of(store.process.pid)
    assert children, "the server should run SeaweedFS as a child"
    store.stop()
    assert store.process.returncode == 0
    for child in children:
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child), f"child {child} outlived the server"

    started = time.monotonic()
    again = start_local_store(seeded_dir)
    print(
        f"\nwarm restart of provenafs serve --seed to healthy: {time.monotonic() - started:.2f} s"
    )
    try:
        assert sorted(all_ids(again, admin)) == before_ids  # same token still verifies
        assert fetch(again, admin, handle).json() == before_item
        assert again.manifest()["datasets"] == manifest_before["datasets"]
        response = httpx.post(
            f"{again.base_url}/auth/realms/provena/protocol/openid-connect/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": offline,
                "client_id": "client-tools",
                "scope": "",
            },
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json()["access_token"]
    finally:
        again.stop()


def test_refuses_non_loopback_host(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "provenafs", "serve", "--data-dir", str(tmp_path / "d")]
    cmd += ["--host", "0.0.0.0", "--port", str(free_port())]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "loopback" in result.stderr


def test_bad_fault_flag(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "provenafs", "serve", "--data-dir", str(tmp_path / "d")]
    cmd += ["--fault", "latency_ms=fast"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "--fault" in result.stderr
