"""Finding, creating and releasing datasets through real mounts of the local store (issue 14).

Several Provena users mount the same seeded store: alice (draft writes, and a second mount with
``-o writes=in-place``), bob and the release reviewer admin. Everything is checked from outside:
file names and bytes, errnos, the data store's records over HTTP, the daemons' counters in
``.provenafs/status.json``, and the CLI's exit codes and output.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LocalStore
from tests.e2e.writes_support import (
    API_TIMEOUT,
    PROVENAFS,
    StoreApi,
    WritableMount,
    expect_errno,
    private_store,
    writable_mount,
)

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    with private_store(tmp_path_factory.mktemp("discovery") / "data") as private:
        yield private


@pytest.fixture(scope="module")
def api(store: LocalStore) -> StoreApi:
    return StoreApi(store)


def _mount(
    store: LocalStore, factory: pytest.TempPathFactory, user: str, options: str
) -> Iterator[WritableMount]:
    mountpoint = factory.mktemp(f"discovery-{user}") / "mnt"
    with writable_mount(store, mountpoint, user=user, options=options) as mount:
        yield mount


@pytest.fixture(scope="module")
def alice(store: LocalStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WritableMount]:
    yield from _mount(store, tmp_path_factory, "alice", "rw,publish_delay=0")


@pytest.fixture(scope="module")
def alice_in_place(
    store: LocalStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WritableMount]:
    yield from _mount(store, tmp_path_factory, "alice", "rw,publish_delay=0,writes=in-place")


@pytest.fixture(scope="module")
def bob(store: LocalStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WritableMount]:
    yield from _mount(store, tmp_path_factory, "bob", "rw,publish_delay=0")


@pytest.fixture(scope="module")
def admin(store: LocalStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WritableMount]:
    yield from _mount(store, tmp_path_factory, "admin", "rw,publish_delay=0,writes=in-place")


def status(mount: WritableMount) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((mount.path / ".provenafs" / "status.json").read_bytes())
    return document


def fetch_calls(mount: WritableMount) -> int:
    return int(status(mount)["data_store_calls"].get("fetch_dataset", 0))


def ok(result: subprocess.CompletedProcess[str], what: str) -> str:
    assert result.returncode == 0, f"{what}: {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def access_settings(api: StoreApi, handle: str, user: str = "alice") -> dict[str, Any]:
    return api.access_settings(handle, user)


def put_access(api: StoreApi, handle: str, general: list[str]) -> None:
    response = httpx.put(
        f"{api.store.base_url}/registry/entity/dataset/auth/configuration",
        params={"id": handle},
        json={"owner": "alice", "general": general, "groups": {}},
        headers=api.headers("alice"),
        timeout=API_TIMEOUT,
    )
    assert response.status_code == 200, response.text


def write_file(path: Path, data: bytes) -> None:
    """``open(O_WRONLY|O_TRUNC)``, write, ``close()``: the close reports a refused edit."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# --- search ---------------------------------------------------------------------------------


def test_search_shows_only_the_hits_the_user_may_fetch(
    api: StoreApi, alice: WritableMount, bob: WritableMount
) -> None:
    # bob's private dataset: bob finds it, alice does not (the search API does not filter)
    assert any("Bob's private dataset" in n for n in os.listdir(bob.path / "search" / "private"))
    assert not any("Bob's private" in n for n in os.listdir(alice.path / "search" / "private"))
    # alice's own private dataset: hidden from bob until alice shares it through access.json
    unique = uuid.uuid4().hex[:8]
    mine = api.mint("alice", {"data.csv": b"a,b\n"}, name=f"Unicorn telemetry {unique}")
    put_access(api, mine.handle, [])
    assert os.listdir(bob.path / "search" / f"unicorn {unique}") == []
    access = alice.path / f"{mine.handle}.access.json"
    settings = json.loads(access.read_bytes())
    settings["general"] = ["metadata-read"]
    write_file(access, json.dumps(settings).encode())
    assert access_settings(api, mine.handle)["general"] == ["metadata-read"]
    found = os.listdir(bob.path / "search" / f"unicorn telemetry {unique}")
    assert found == [f"01 Unicorn telemetry {unique}"]
    link = bob.path / "search" / f"unicorn telemetry {unique}" / found[0]
    assert os.readlink(link) == f"../../{mine.handle}"
    assert os.path.realpath(link) == str(bob.path / mine.handle)


def test_find_from_the_root_never_runs_a_query(alice: WritableMount) -> None:
    before = status(alice)["discovery"]["searches"]
    walked = subprocess.run(
        ["find", str(alice.path), "-path", str(alice.path / "10378.1"), "-prune", "-o", "-print"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.splitlines()
    assert str(alice.path / "search") in walked
    assert not [p for p in walked if p.startswith(str(alice.path / "search") + "/")]
    assert str(alice.path / "mine" / "Reef logger temperatures 2023") in walked
    listed = subprocess.run(
        ["ls", "-R", str(alice.path / "search")], capture_output=True, text=True, check=True
    )
    assert listed.stdout.strip() == f"{alice.path / 'search'}:"
    assert status(alice)["discovery"]["searches"] == before


# --- facets ---------------------------------------------------------------------------------


def test_facets_group_the_dataset_list(api: StoreApi, alice: WritableMount) -> None:
    root = alice.path
    reef = api.seed_handle("reef-temperatures")
    mine = os.listdir(root / "mine")
    assert {"Reef logger temperatures 2023", "Versioned survey", "Locked dataset"} <= set(mine)
    assert "Large binary sample" not in mine
    assert "Large binary sample" in os.listdir(root / "shared-with-me")
    assert os.readlink(root / "mine" / "Reef logger temperatures 2023") == f"../{reef}"
    # (datasets these tests mint copy the reef dataset's metadata, keywords included)
    assert "Reef logger temperatures 2023" in os.listdir(root / "by-keyword" / "reef-temperatures")
    assert "Large binary sample" not in os.listdir(root / "by-keyword" / "reef-temperatures")
    keyword_link = root / "by-keyword" / "reef-temperatures" / "Reef logger temperatures 2023"
    assert os.path.realpath(keyword_link) == str(root / reef)
    assert (keyword_link / "README.md").read_bytes().startswith(b"# Reef logger temperatures")
    assert "Large binary sample" in os.listdir(root / "by-owner" / "bob")
    assert "Released dataset" in os.listdir(root / "by-status" / "RELEASED")
    assert os.listdir(root / "by-meta" / "seed=history") == ["CTD casts with history"]
    recent = sorted(os.listdir(root / "recent"))
    assert recent[0].startswith("01 ")


def test_ls_l_of_facets_asks_for_no_record(alice: WritableMount) -> None:
    root = alice.path
    os.listdir(root / "mine")  # the dataset list is fetched (once per TTL)
    before = fetch_calls(alice)
    for facet in ("mine", "shared-with-me", "recent", "by-keyword/sample", "by-owner/alice"):
        subprocess.run(["ls", "-l", str(root / facet)], capture_output=True, check=True)
    assert fetch_calls(alice) == before


# --- locks, access settings, citation ---------------------------------------------------------


def test_lock_and_unlock_show_in_the_lock_history_and_the_sidecar(
    api: StoreApi, alice: WritableMount
) -> None:
    dataset = api.mint("alice", {"a.txt": b"a\n"})
    directory = alice.dataset_dir(dataset.handle)
    assert json.loads((alice.path / f"{dataset.handle}.locks.json").read_bytes())["history"] == []
    ok(alice.run("lock", str(directory), "-m", "frozen for the paper"), "lock")
    assert os.stat(alice.sidecar(dataset.handle)).st_mode & 0o777 == 0o444  # at once
    expect_errno(errno.EACCES, lambda: os.open(alice.sidecar(dataset.handle), os.O_WRONLY), "edit")
    ok(alice.run("unlock", str(directory), "-m", "published"), "unlock")
    assert os.stat(alice.sidecar(dataset.handle)).st_mode & 0o777 == 0o644
    locks = json.loads((alice.path / f"{dataset.handle}.locks.json").read_bytes())
    assert locks["locked"] is False
    assert [(e["action"], e["reason"], e["username"]) for e in locks["history"]] == [
        ("LOCK", "frozen for the paper", "alice"),
        ("UNLOCK", "published", "alice"),
    ]
    locks_file = alice.path / f"{dataset.handle}.locks.json"
    expect_errno(errno.EACCES, lambda: os.open(locks_file, os.O_WRONLY), "write locks.json")
    refused = alice.run("lock", str(alice.dataset_dir(api.seed_handle("big-binary"))), "-m", "x")
    assert refused.returncode == 1 and "not authorised" in refused.stderr  # bob's dataset


def test_access_settings_refuse_what_they_must_and_change_nothing(
    api: StoreApi, alice: WritableMount, bob: WritableMount
) -> None:
    dataset = api.mint("alice", {"a.txt": b"a\n"})
    before = access_settings(api, dataset.handle)
    theirs = bob.path / f"{dataset.handle}.access.json"
    assert os.stat(theirs).st_mode & 0o777 == 0
    expect_errno(errno.EACCES, theirs.read_bytes, "bob reads alice's settings")
    expect_errno(errno.EACCES, lambda: write_file(theirs, b'{"general": []}'), "bob writes")
    own = alice.path / f"{dataset.handle}.access.json"
    shown = json.loads(own.read_bytes())
    assert shown["owner"] == "alice"
    assert shown["by_role"]["admin"] == ["owner:alice"]
    for bad in ({"owner": "bob"}, {"general": ["root"]}, {"groups": {"g": "admin"}}, {"x": 1}):
        data = json.dumps({**shown, **bad}).encode()
        expect_errno(errno.EINVAL, functools.partial(write_file, own, data), f"write {bad}")
    unknown = json.dumps({**shown, "groups": {"no-such-group": ["admin"]}}).encode()
    expect_errno(errno.EINVAL, functools.partial(write_file, own, unknown), "the registry refuses")
    assert access_settings(api, dataset.handle) == before
    write_file(own, json.dumps({**shown, "groups": {"reef-team": ["metadata-read"]}}).encode())
    after = access_settings(api, dataset.handle)
    assert after["groups"] == {"reef-team": ["metadata-read"]}
    assert {k: v for k, v in after.items() if k != "groups"} == {
        k: v for k, v in before.items() if k != "groups"
    }


def test_citation_file_is_valid_cff(api: StoreApi, alice: WritableMount) -> None:
    reef = api.seed_handle("reef-temperatures")
    citation = alice.path / f"{reef}.cff"
    text = citation.read_text()
    assert 'title: "Reef logger temperatures 2023"' in text
    assert f'url: "https://hdl.handle.net/{reef}"' in text
    assert 'license: "CC-BY-4.0"' in text
    assert os.stat(citation).st_mode & 0o777 == 0o444
    assert os.stat(citation).st_size == len(text.encode())
    validator = Path(sys.executable).parent / "cffconvert"
    checked = subprocess.run(
        [str(validator), "--validate", "-i", str(citation)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    expect_errno(errno.EACCES, lambda: os.open(citation, os.O_WRONLY), "write the citation")


# --- identity -------------------------------------------------------------------------------


def test_whoami_and_status_name_the_linked_person(
    store: LocalStore, api: StoreApi, alice: WritableMount, tmp_path: Path
) -> None:
    person = store.manifest()["persons"]["alice"]
    shown = ok(alice.run("whoami", str(alice.path), "--json"), "whoami")
    identity = json.loads(shown)
    assert identity["username"] == "alice"
    assert identity["person_id"] == person
    assert identity["person_name"] == "Alice Anderson"
    assert identity["can_write"] is True
    assert "entity-registry-write" in identity["realm_roles"]
    result = alice.run("status", str(alice.path))
    assert f"linked Person {person}" in ok(result, "status")
    assert "warning" not in result.stderr
    api.serve_ok("user", "add", "dave", "--roles", "r,w", "--email", "dave@example.org")
    with writable_mount(store, tmp_path / "dave", user="dave") as dave:
        lines = ok(dave.run("whoami", str(dave.path)), "whoami dave")
        assert "linked person: none" in lines
        checked = dave.run("status", str(dave.path))
        assert "has no linked Person" in checked.stderr


# --- release and review -----------------------------------------------------------------------


def test_a_release_request_and_approval_turn_the_dataset_read_only_at_once(
    store: LocalStore, api: StoreApi, alice_in_place: WritableMount, admin: WritableMount
) -> None:
    dataset = api.mint("alice", {"data.csv": b"1,2\n"}, name=f"Release me {uuid.uuid4().hex[:6]}")
    directory = alice_in_place.dataset_dir(dataset.handle)
    (directory / "before.txt").write_bytes(b"written in place\n")  # writable now
    assert os.stat(directory).st_mode & 0o777 == 0o755
    asked = alice_in_place.run("release", str(directory), "--to", "admin", "-m", "please")
    ok(asked, "release")
    reviewer = store.manifest()["persons"]["admin"]
    # the requester's tree follows at once: pending review takes no in-place writes
    assert os.stat(directory).st_mode & 0o777 == 0o555
    expect_errno(errno.EACCES, lambda: (directory / "after.txt").write_bytes(b"x"), "pending")
    assert os.getxattr(directory, "user.provena.release_status") == b"PENDING"
    assert os.getxattr(directory, "user.provena.release_approver") == reviewer.encode()
    assert os.getxattr(directory, "user.provena.release_timestamp").endswith(b"Z")
    sidecar = json.loads(alice_in_place.sidecar(dataset.handle).read_bytes())
    assert sidecar["item"]["release_approver"] == reviewer
    assert (
        sidecar["item"]["release_timestamp"]
        == api.record(dataset.handle)["item"]["release_timestamp"]
    )
    assert isinstance(sidecar["item"]["release_timestamp"], int)
    # the reviewer finds it in reviews/ and approves it through the link
    assert dataset.name in os.listdir(admin.path / "reviews")
    link = admin.path / "reviews" / dataset.name
    assert os.path.realpath(link) == str(admin.dataset_dir(dataset.handle))
    ok(admin.run("review", str(link), "--approve", "-m", "fine"), "review")
    assert dataset.name not in os.listdir(admin.path / "reviews")
    assert api.record(dataset.handle)["item"]["release_status"] == "RELEASED"
    reviewed = admin.dataset_dir(dataset.handle)
    assert os.getxattr(reviewed, "user.provena.release_status") == b"RELEASED"
    assert os.stat(reviewed).st_mode & 0o777 == 0o555
    expect_errno(errno.EACCES, lambda: (reviewed / "after.txt").write_bytes(b"x"), "released")
    assert (reviewed / "before.txt").read_bytes() == b"written in place\n"


def test_a_rejected_release_makes_the_dataset_writable_again_at_once(
    api: StoreApi, alice_in_place: WritableMount, admin: WritableMount
) -> None:
    dataset = api.mint("alice", {"data.csv": b"1\n"}, name=f"Reject me {uuid.uuid4().hex[:6]}")
    directory = alice_in_place.dataset_dir(dataset.handle)
    ok(alice_in_place.run("release", str(directory), "--to", "Ada Admin", "-m", "n"), "release")
    reviewed = admin.dataset_dir(dataset.handle)  # a realm admin may write every dataset
    expect_errno(errno.EACCES, lambda: (reviewed / "x.txt").write_bytes(b"x"), "pending")
    assert os.stat(reviewed).st_mode & 0o777 == 0o555
    ok(admin.run("review", str(reviewed), "--reject", "-m", "not yet"), "reject")
    assert api.record(dataset.handle)["item"]["release_status"] == "NOT_RELEASED"
    assert os.stat(reviewed).st_mode & 0o777 == 0o755  # at once
    (reviewed / "x.txt").write_bytes(b"fixed\n")
    key = dataset.s3_prefix + "x.txt"
    assert api.s3.get_object(Bucket=api.bucket, Key=key)["Body"].read() == b"fixed\n"
    refused = alice_in_place.run("review", str(directory), "--approve", "-m", "self")
    assert refused.returncode == 1  # alice is no reviewer


def test_release_to_someone_who_is_no_reviewer_is_refused(
    api: StoreApi, alice: WritableMount
) -> None:
    dataset = api.mint("alice", {"a.txt": b"a\n"})
    refused = alice.run("release", str(alice.dataset_dir(dataset.handle)), "--to", "bob", "-m", "n")
    assert refused.returncode == 1
    assert "not a release reviewer" in refused.stderr
    assert "Ada Admin" in refused.stderr
    assert api.record(dataset.handle)["item"]["release_status"] == "NOT_RELEASED"


# --- new ------------------------------------------------------------------------------------


def new(mount: WritableMount, store: LocalStore, *args: str) -> subprocess.CompletedProcess[str]:
    return mount.run("new", "--source", store.base_url, *args)


def test_new_then_writes_through_the_mount_go_into_the_fresh_dataset(
    store: LocalStore, api: StoreApi, alice: WritableMount
) -> None:
    ok(new(alice, store, "--init"), "new --init")
    config = Path(alice.env["XDG_CONFIG_HOME"]) / "provenafs" / "new-dataset.json"
    assert config.stat().st_mode & 0o777 == 0o600
    assert config.parent.stat().st_mode & 0o777 == 0o700
    name = f"Fresh results {uuid.uuid4().hex[:6]}"
    handle = ok(new(alice, store, name, "--keyword", "fresh"), "new").strip().splitlines()[-1]
    record = api.record(handle)["item"]
    assert record["display_name"] == name
    assert record["owner_username"] == "alice"
    assert (
        record["collection_format"]["associations"]["data_custodian_id"]
        == (store.manifest()["persons"]["alice"])
    )
    defaults = json.loads(config.read_text())  # what --init chose, now in the new record
    info = record["collection_format"]["dataset_info"]
    assert (
        record["collection_format"]["associations"]["organisation_id"]
        == (defaults["organisation_id"])
    )
    assert (info["publisher_id"], info["license"]) == (
        defaults["publisher_id"],
        defaults["license"],
    )
    directory = alice.dataset_dir(handle)
    assert os.listdir(directory) == ["metadata.json"]
    (directory / "result.csv").write_bytes(b"x,y\n1,2\n")
    (directory / "plots").mkdir()
    (directory / "plots" / "a.txt").write_bytes(b"plot\n")
    assert alice.commit_ok(directory, "first results") == handle  # no version 2
    assert api.next_version(handle) is None
    prefix = record["s3"]["path"]
    objects = api.s3.list_objects_v2(Bucket=api.bucket, Prefix=prefix)["Contents"]
    assert sorted(o["Key"][len(prefix) :] for o in objects) == [
        "metadata.json",
        "plots/",  # the folder the draft made: its marker carries its mode and mtime
        "plots/a.txt",
        "result.csv",
    ]
    assert name in os.listdir(alice.path / "by-keyword" / "fresh")


def test_new_takes_its_metadata_from_a_file(
    store: LocalStore, api: StoreApi, alice: WritableMount, tmp_path: Path
) -> None:
    ok(new(alice, store, "--init"), "new --init")
    sidecar = json.loads(alice.sidecar(api.seed_handle("reef-temperatures")).read_bytes())
    sidecar["item"]["collection_format"]["dataset_info"]["description"] = "From a file"
    sidecar["item"]["collection_format"]["dataset_info"]["keywords"] = ["from-file"]
    given = tmp_path / "sidecar.json"
    given.write_text(json.dumps(sidecar))  # a sidecar of another dataset, edited
    name = f"Described {uuid.uuid4().hex[:6]}"
    handle = ok(new(alice, store, name, "--metadata", str(given)), "new").strip().splitlines()[-1]
    info = api.record(handle)["item"]["collection_format"]["dataset_info"]
    assert (info["name"], info["description"], info["keywords"]) == (
        name,
        "From a file",
        ["from-file"],
    )


def test_new_refuses_invalid_metadata_naming_the_field(
    store: LocalStore, api: StoreApi, alice: WritableMount, tmp_path: Path
) -> None:
    ok(new(alice, store, "--init"), "new --init")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"dataset_info": {"license": "not a url"}}))
    before = len(api.list_all("alice"))
    refused = new(alice, store, "Should not exist", "--metadata", str(bad))
    assert refused.returncode == 1
    assert "license" in refused.stderr
    assert len(api.list_all("alice")) == before


def test_a_sidecar_edit_the_data_store_refuses_names_the_field(
    api: StoreApi, alice: WritableMount
) -> None:
    dataset = api.mint("alice", {"a.txt": b"a\n"})
    sidecar = alice.sidecar(dataset.handle)
    document = json.loads(sidecar.read_bytes())
    cf = document["item"]["collection_format"]
    cf["approvals"]["export_controls"] = {"relevant": True, "obtained": False}
    expect_errno(
        errno.EINVAL, lambda: write_file(sidecar, json.dumps({"collection_format": cf}).encode())
    )
    assert api.record(dataset.handle)["item"]["collection_format"]["approvals"][
        "export_controls"
    ] == {"relevant": False, "obtained": False}
    assert "export_controls" in alice.mount.log_text()


def test_new_with_a_forged_token_mints_nothing_and_shows_no_token(
    store: LocalStore, api: StoreApi, alice: WritableMount
) -> None:
    ok(new(alice, store, "--init"), "new --init")
    env = {k: v for k, v in alice.env.items() if k != "PROVENAFS_OFFLINE_TOKEN"}
    forged = "eyJhbGciOiJSUzI1NiJ9.eyJwcmVmZXJyZWRfdXNlcm5hbWUiOiJhbGljZSJ9.Zm9yZ2Vk"
    env["PROVENAFS_TOKEN"] = forged
    before = len(api.list_all("alice"))
    refused = subprocess.run(
        [*PROVENAFS, "new", "Forged", "--source", store.base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 1
    assert "credentials" in refused.stderr.lower() or "refused" in refused.stderr.lower()
    assert forged not in refused.stdout + refused.stderr
    assert len(api.list_all("alice")) == before
