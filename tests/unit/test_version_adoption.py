"""Adopting a lost version checks who made it (issue 10 item 8).

After a crash between ``POST /register/version`` and journaling its answer, the publisher
looks for the base's successor with the journaled reason. Only a successor this user made
(``owner_username`` is the versioning user, docs/API.md §5.1) is filled with the draft; one
made by another admin with the same reason is left alone, and a generated reason carries a
random request id, so it names one request only. Over the fakes of ``test_publish``.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from provenafs.api import errors as api_errors
from provenafs.api.client import DataStoreClient
from provenafs.api.models import VersionCreated
from provenafs.api.realm import StaticToken
from provenafs.storage.credentials import CredentialBroker
from provenafs.write.publish import PublishError
from tests.unit.fakes import s3_path
from tests.unit.publish_support import OLD, SERVER_METADATA, VersioningStore, World


class StrictVersions(VersioningStore):
    """Versions as the data store makes them: of the latest version only, owned by the caller."""

    def __init__(self, world_blobs: object) -> None:
        super().__init__(world_blobs)  # type: ignore[arg-type]
        self.caller = "jsmith"
        self.me: str | None = "jsmith"  # whom the mount's token names

    async def username(self) -> str | None:
        return self.me

    async def create_version(self, handle: str, reason: str) -> VersionCreated:
        following = self.items[handle]["versioning_info"]["next_version"]
        if following is not None:
            await self._enter("version")
            raise api_errors.InvalidRequestError(
                f"Cannot create a new version for an item ({handle}) which is not the latest "
                f"version. Next version {following} already exists!"
            )
        created = await super().create_version(handle, reason)
        self.items[created.new_version_id]["owner_username"] = self.caller
        return created


def strict_world(tmp_path: Path) -> World:
    world = World(tmp_path)
    world.datastore = StrictVersions(world.blobs)
    world.datastore.add(OLD)
    world.broker = CredentialBroker(world.datastore)
    return world


async def mint_as(world: World, user: str, reason: str) -> str:
    """Another client of the data store versions the base meanwhile."""
    store = world.datastore
    assert isinstance(store, StrictVersions)
    store.caller = user
    try:
        created = await store.create_version(OLD, reason)
    finally:
        store.caller = "jsmith"
    return created.new_version_id


async def test_a_version_someone_else_made_with_the_same_reason_is_not_adopted(
    tmp_path: Path,
) -> None:
    world = strict_world(tmp_path)
    plan, _ = world.standard_plan()
    draft = world.drafts.add(OLD, plan)
    draft.record_version_request("nightly")  # sent, and its answer lost
    foreign = await mint_as(world, "mallory", "nightly")  # another admin, the same reason

    with pytest.raises(PublishError, match="not the latest version"):
        await world.publisher().publish(OLD)
    assert world.prefix_contents(s3_path(foreign)) == {"metadata.json": SERVER_METADATA}
    assert draft.new_version_id is None and not draft.discarded
    assert draft.version_request is None  # refused: surely no version of ours was made
    assert [v for v, _ in world.datastore.versions_created] == [foreign]


async def test_a_token_that_names_no_user_adopts_nothing(tmp_path: Path) -> None:
    world = strict_world(tmp_path)
    plan, _ = world.standard_plan()
    draft = world.drafts.add(OLD, plan)
    draft.record_version_request("nightly")
    ours = await mint_as(world, "jsmith", "nightly")
    assert isinstance(world.datastore, StrictVersions)
    world.datastore.me = None
    with pytest.raises(PublishError):
        await world.publisher().publish(OLD)
    assert world.prefix_contents(s3_path(ours)) == {"metadata.json": SERVER_METADATA}


async def test_our_own_lost_version_is_still_adopted(tmp_path: Path) -> None:
    world = strict_world(tmp_path)
    plan, expected = world.standard_plan()
    draft = world.drafts.add(OLD, plan)
    draft.record_version_request("nightly")
    ours = await mint_as(world, "jsmith", "nightly")
    assert await world.publisher().publish(OLD) == ours
    assert world.prefix_contents(s3_path(ours)) == expected


async def test_a_generated_reason_names_one_request(tmp_path: Path) -> None:
    """Two requests for the same changes carry different ids; the journal holds the one sent,
    so a version another request made (the same user's second mount) is not adopted."""
    world = strict_world(tmp_path)
    plan, _ = world.standard_plan()
    draft = world.drafts.add(OLD, plan)
    world.datastore.lose_version_answer = True
    with pytest.raises(PublishError, match="unreachable"):
        await world.publisher().publish(OLD)
    [(minted, sent)] = world.datastore.versions_created
    assert re.fullmatch(r"provenafs: .* \[request [0-9a-f]{8}\]", sent), sent
    assert draft.version_requests[-1] == sent

    (tmp_path / "other").mkdir()
    other = strict_world(tmp_path / "other")
    other_draft = other.drafts.add(OLD, plan)
    other_draft.record_version_request(sent.rsplit("[", 1)[0] + "[request 00000000]")
    lookalike = await mint_as(other, "jsmith", sent)  # same user, same changes, other request
    with pytest.raises(PublishError, match="not the latest version"):
        await other.publisher().publish(OLD)
    assert other.prefix_contents(s3_path(lookalike)) == {"metadata.json": SERVER_METADATA}
    assert minted  # the first world's lost version stays for its own draft to adopt


async def test_generated_reasons_differ_per_request(tmp_path: Path) -> None:
    reasons = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        world = strict_world(tmp_path / name)
        plan, _ = world.standard_plan()
        world.drafts.add(OLD, plan)
        await world.publisher().publish(OLD)
        [(_, reason)] = world.datastore.versions_created
        reasons.append(reason)
    assert reasons[0] != reasons[1]
    assert reasons[0].rsplit(" [", 1)[0] == reasons[1].rsplit(" [", 1)[0]


def fake_jwt(claims: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.c2ln"


@pytest.mark.parametrize(
    ("claims", "expected"),
    [({"preferred_username": "alice", "exp": 1}, "alice"), ({"sub": "x"}, None)],
)
async def test_the_client_names_the_tokens_user(
    claims: dict[str, object], expected: str | None
) -> None:
    client = DataStoreClient("http://127.0.0.1:1", StaticToken(fake_jwt(claims)))
    try:
        assert await client.username() == expected
    finally:
        await client.aclose()
    opaque = DataStoreClient("http://127.0.0.1:1", StaticToken("not-a-jwt"))
    assert await opaque.username() is None
    await opaque.aclose()
