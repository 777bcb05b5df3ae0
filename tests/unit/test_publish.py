"""Publisher and PublishScheduler over MemoryBlobStore and a fake data store.

Drafts are ``FakeDraft``s whose plan is fixed by the test and whose "journal" (new version id,
published paths) lives in the object, so a second publish after a failure sees what a replay of
the real journal would. Sizes are small and the part size is 64 KiB, so multipart paths run.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from provenafs.api import errors as api_errors
from provenafs.api.models import Credentials
from provenafs.storage.blobstore import BlobUnavailableError, MemoryBlobStore
from provenafs.write.draft_plan import DraftPlan, StagedFile
from provenafs.write.publish import (
    NothingToPublishError,
    PublishError,
    PublishProgress,
    generated_reason,
)
from provenafs.write.publish_scheduler import PublishScheduler
from tests.unit.fakes import BUCKET, FakeClock, s3_path
from tests.unit.publish_support import (
    OLD,
    OLD_PREFIX,
    PART,
    SERVER_METADATA,
    DaemonDied,
    World,
    content,
)


async def test_publish_writes_exactly_the_planned_tree(tmp_path: Path) -> None:
    world = World(tmp_path)
    plan, expected = world.standard_plan()
    draft = world.drafts.add(OLD, plan)
    base_before = world.prefix_contents(OLD_PREFIX)

    async def main() -> str:
        return await world.publisher().publish(OLD, "my reason")

    new = await main()
    assert world.datastore.versions_created == [(new, "my reason")]
    assert world.prefix_contents(s3_path(new)) == expected
    assert world.prefix_contents(OLD_PREFIX) == base_before  # the old version is untouched
    assert draft.discarded
    assert world.drafts.get(OLD) is None
    assert world.hooks.events == [("begin", OLD), ("done", OLD, new), ("end", OLD)]
    assert set(draft.published) == {f.path for f in plan.staged} | {f.path for f in plan.carried}
    # big.bin and new-big.bin went up in parts, with S3-style multipart ETags
    assert world.blobs.objects[(BUCKET, s3_path(new) + "big.bin")][1].etag.endswith("-6")
    assert world.blobs.calls["upload_part"] == 6 + 4
    assert not world.blobs.uploads  # nothing left unfinished


async def test_metadata_json_is_never_written(tmp_path: Path) -> None:
    world = World(tmp_path)
    plan, _ = world.standard_plan()
    # a plan that (wrongly) names metadata.json both ways must still leave the server's copy
    plan = DraftPlan(
        staged=(*plan.staged, world.staged("metadata.json", b"{}")),
        carried=(*plan.carried, world.carried("metadata.json")),
        empty_dirs=plan.empty_dirs,
        removed=plan.removed,
    )
    world.drafts.add(OLD, plan)
    written: list[str] = []
    original = world.blobs.put_object

    async def spy(creds: Credentials, bucket: str, key: str, data: bytes, **kwargs: Any) -> str:
        written.append(key)
        return await original(creds, bucket, key, data, **kwargs)

    world.blobs.put_object = spy  # type: ignore[method-assign]

    async def main() -> str:
        return await world.publisher().publish(OLD, "r")

    new = await main()
    assert world.prefix_contents(s3_path(new))["metadata.json"] == SERVER_METADATA
    assert not [key for key in written if key.endswith("metadata.json")]


class FailingStore(MemoryBlobStore):
    """Fails every write after ``budget`` successful ones (as S3 after its retries)."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget

    def _spend(self) -> None:
        if self.budget <= 0:
            raise BlobUnavailableError("put: 503")
        self.budget -= 1

    async def put_object(
        self, creds: Credentials, bucket: str, key: str, data: bytes, **kwargs: Any
    ) -> str:
        self._spend()
        return await super().put_object(creds, bucket, key, data, **kwargs)

    async def upload_part(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        upload_id: str,
        *,
        number: int,
        data: bytes,
    ) -> str:
        self._spend()
        return await super().upload_part(creds, bucket, key, upload_id, number=number, data=data)


async def test_a_failed_publish_resumes_into_the_same_version(tmp_path: Path) -> None:
    blobs = FailingStore(budget=8)
    world = World(tmp_path, blobs)
    plan, expected = world.standard_plan()
    draft = world.drafts.add(OLD, plan)

    with pytest.raises(PublishError, match="S3 failed"):
        await world.publisher(max_parallel=1).publish(OLD, "r")
    assert len(world.datastore.versions_created) == 1
    new = world.datastore.versions_created[0][0]
    assert draft.new_version_id == new  # recorded before any copy
    assert not draft.discarded
    assert world.drafts.get(OLD) is draft
    assert world.hooks.events[-1] == ("end", OLD)  # end_publish even on failure
    assert not blobs.uploads  # the failed multipart upload was aborted
    done_first = list(draft.published)
    assert 0 < len(done_first) < 6

    blobs.budget = 10_000
    puts_before = blobs.calls["put"] + blobs.calls["upload_part"]

    async def second() -> str:
        return await world.publisher().publish(OLD, "another reason")

    assert await second() == new
    assert len(world.datastore.versions_created) == 1  # never a second version
    assert world.datastore.calls["version"] == 1
    assert world.prefix_contents(s3_path(new)) == expected
    # exactly what had not landed the first time was sent: every file's PUTs or parts, the
    # two directory markers and the attributes manifest
    sizes = {f.path: f.size for f in plan.staged} | {f.path: f.size for f in plan.carried}
    requests = {path: max(1, -(-size // PART)) for path, size in sizes.items()}
    resent = sum(n for path, n in requests.items() if path not in done_first) + 2 + 1
    assert blobs.calls["put"] + blobs.calls["upload_part"] - puts_before == resent
    assert draft.discarded


class DroppingStore(MemoryBlobStore):
    """Answers success for PUTs of ``victim`` but stores a short (or no) object."""

    def __init__(self, victim: str, keep: int | None) -> None:
        super().__init__()
        self.victim = victim
        self.keep = keep

    async def put_object(
        self, creds: Credentials, bucket: str, key: str, data: bytes, **kwargs: Any
    ) -> str:
        if key.endswith(self.victim):
            etag = hashlib.md5(data).hexdigest()  # noqa: S324 (the answer claims success)
            if self.keep is not None:
                self.put_blocking(bucket, key, data[: self.keep])
            return etag
        return await super().put_object(creds, bucket, key, data, **kwargs)


@pytest.mark.parametrize(
    ("keep", "message"), [(None, "added/new.txt is missing"), (3, "has 3 bytes, not 10")]
)
async def test_verify_catches_a_missing_or_short_object(
    tmp_path: Path, keep: int | None, message: str
) -> None:
    world = World(tmp_path, DroppingStore("added/new.txt", keep))
    plan, _ = world.standard_plan()
    draft = world.drafts.add(OLD, plan)

    with pytest.raises(PublishError, match=message):
        await world.publisher().publish(OLD, "r")
    assert not draft.discarded
    assert ("done", OLD, draft.new_version_id) not in world.hooks.events


async def test_verify_catches_bytes_that_differ_from_the_base_etag(tmp_path: Path) -> None:
    world = World(tmp_path)
    plan, _ = world.standard_plan()
    # the base object changed under the draft but kept its listing: the If-Match GET fails
    key = OLD_PREFIX + "keep.csv"
    data, info = world.blobs.objects[(BUCKET, key)]
    world.blobs.objects[(BUCKET, key)] = (data[:-1] + b"X", info)
    world.drafts.add(OLD, plan)

    with pytest.raises(PublishError, match=r"keep\.csv: the bytes read do not match"):
        await world.publisher().publish(OLD, "r")


async def test_progress_is_monotone_and_ends_at_the_totals(tmp_path: Path) -> None:
    world = World(tmp_path)
    plan, _ = world.standard_plan()
    world.drafts.add(OLD, plan)
    seen: list[PublishProgress] = []

    async def main() -> str:
        return await world.publisher(max_parallel=3).publish(OLD, "r", seen.append)

    new = await main()
    assert len(seen) > 10
    for before, after in itertools.pairwise(seen):
        assert after.bytes_done >= before.bytes_done
        assert after.files_done >= before.files_done
    total = sum(f.size for f in plan.staged) + sum(f.size for f in plan.carried)
    assert seen[-1].bytes_done == seen[-1].bytes_total == total
    assert seen[-1].files_done == seen[-1].files_total == 6
    assert seen[-1].phase == "done"
    assert seen[-1].new_handle == new
    phases: list[str] = [p.phase for p in seen]
    order = ["versioning", "copying", "verifying", "finishing", "done"]
    assert [phases.index(p) for p in order] == sorted(phases.index(p) for p in order)


async def test_a_draft_that_changes_nothing_is_discarded_without_a_version(tmp_path: Path) -> None:
    world = World(tmp_path)
    rels = ["keep.csv", "big.bin", "change.txt", "gone.txt", "moved-from.dat"]
    plan = DraftPlan((), tuple(world.carried(r) for r in rels), ("raw/empty",), ())
    draft = world.drafts.add(OLD, plan)

    with pytest.raises(NothingToPublishError):
        await world.publisher().publish(OLD, "r")
    with pytest.raises(NothingToPublishError):
        await world.publisher().publish(OLD, "r")  # no draft at all now
    assert draft.discarded
    assert world.datastore.calls["version"] == 0


async def test_refused_write_credentials_give_the_data_stores_reason(tmp_path: Path) -> None:
    world = World(tmp_path)
    plan, _ = world.standard_plan()
    draft = world.drafts.add(OLD, plan)
    world.datastore.refuse_write = api_errors.PermissionDeniedError(
        "This dataset is locked - you cannot modify the files of a locked dataset."
    )

    with pytest.raises(PublishError, match=r"refused write access.*locked dataset"):
        await world.publisher().publish(OLD, "r")
    assert draft.new_version_id is not None
    assert not draft.discarded


async def test_a_lost_version_answer_is_adopted_not_minted_twice(tmp_path: Path) -> None:
    world = World(tmp_path)
    plan, expected = world.standard_plan()
    draft = world.drafts.add(OLD, plan)
    world.datastore.lose_version_answer = True
    publisher = world.publisher()

    async def main() -> str:
        with pytest.raises(PublishError, match="unreachable"):
            await publisher.publish(OLD, "r")
        assert draft.new_version_id is None
        return await publisher.publish(OLD, "r")

    new = await main()
    assert world.datastore.calls["version"] == 1
    assert [v for v, _ in world.datastore.versions_created] == [new]
    assert world.prefix_contents(s3_path(new)) == expected


async def test_a_version_whose_answer_was_lost_is_adopted_after_a_restart(tmp_path: Path) -> None:
    """The answer is lost and the daemon dies: a new daemon adopts the version, mints none."""
    world = World(tmp_path)
    plan, expected = world.standard_plan()
    draft = world.drafts.add(OLD, plan)
    world.datastore.lose_version_answer = True

    with pytest.raises(PublishError, match="unreachable"):
        await world.publisher().publish(OLD, "nightly")
    assert draft.version_request == "nightly" and draft.new_version_id is None
    restarted = PublishScheduler(world.publisher(), publish_delay=0)  # nothing kept in memory
    await restarted.run()  # resumes the interrupted publish at start
    [(new, reason)] = world.datastore.versions_created
    assert reason == "nightly"
    assert world.datastore.calls["version"] == 1
    assert world.prefix_contents(s3_path(new)) == expected
    assert draft.discarded


async def test_a_crash_while_the_version_call_is_in_flight_is_adopted_too(tmp_path: Path) -> None:
    """The version was minted, but the daemon died before its answer was journaled."""
    world = World(tmp_path)
    plan, expected = world.standard_plan()
    draft = world.drafts.add(OLD, plan)
    world.datastore.die_after_minting = True

    with pytest.raises(DaemonDied):
        await world.publisher().publish(OLD, "in flight")
    assert draft.version_request == "in flight" and draft.new_version_id is None
    new = await world.publisher().publish(OLD, "another reason")
    assert world.datastore.versions_created == [(new, "in flight")]
    assert draft.discarded
    assert world.prefix_contents(s3_path(new)) == expected


async def test_a_version_request_without_a_successor_asks_again(tmp_path: Path) -> None:
    """The lost call made nothing (the base is still the latest): the next attempt asks again."""
    world = World(tmp_path)
    plan, _ = world.standard_plan()
    draft = world.drafts.add(OLD, plan)
    draft.record_version_request("never arrived")
    new = await world.publisher().publish(OLD, "second try")
    assert world.datastore.versions_created == [(new, "second try")]


async def test_in_place_writes_into_the_same_dataset(tmp_path: Path) -> None:
    world = World(tmp_path)
    plan, expected = world.standard_plan()
    world.drafts.add(OLD, plan)

    async def main() -> str:
        return await world.publisher(in_place=True).publish(OLD, "r")

    assert await main() == OLD
    assert world.datastore.calls["version"] == 0
    expected["metadata.json"] = world.base["metadata.json"]
    assert world.prefix_contents(OLD_PREFIX) == expected
    assert world.hooks.events[-2:] == [("done", OLD, OLD), ("end", OLD)]


class LateReads(MemoryBlobStore):
    """A GET answers after any PUT racing it (or after 0.3 s when none comes)."""

    def __init__(self) -> None:
        super().__init__()
        self.put_done = trio.Event()

    async def put_object(self, *args: Any, **kwargs: Any) -> str:
        etag = await super().put_object(*args, **kwargs)
        self.put_done.set()
        return etag

    async def get_range(self, *args: Any, **kwargs: Any) -> bytes:
        with trio.move_on_after(0.3):
            await self.put_done.wait()
        return await super().get_range(*args, **kwargs)


async def test_in_place_copies_a_renamed_file_before_its_old_key_is_overwritten(
    tmp_path: Path,
) -> None:
    """``mv change.txt kept.txt; echo new > change.txt`` pushed at once: the copy reads the
    old bytes first (its ranged GETs carry the base ETag), and the old folder's marker goes."""
    world = World(tmp_path, LateReads())
    staged_first = world.staged("change.txt", b"new text\n")
    plan = DraftPlan(
        staged=(staged_first,),
        carried=(world.carried("kept.txt", "change.txt"),),
        empty_dirs=(),
        removed=(),
    )
    draft = world.drafts.add(OLD, plan)

    async def main() -> str:
        return await world.publisher(in_place=True).publish(OLD, "r")

    assert await main() == OLD
    landed = world.prefix_contents(OLD_PREFIX)
    assert landed["kept.txt"] == world.base["change.txt"]
    assert landed["change.txt"] == b"new text\n"
    assert "raw/empty/" not in landed  # no longer in the tree: its marker is deleted
    assert draft.settled == 1 and draft.discarded


async def test_in_place_refused_for_a_released_dataset(tmp_path: Path) -> None:
    world = World(tmp_path)
    plan, _ = world.standard_plan()
    draft = world.drafts.add(OLD, plan)
    before = world.prefix_contents(OLD_PREFIX)
    world.datastore.refuse_write = api_errors.ForbiddenError(
        f"Dataset {OLD} is pending review or is released."
    )

    with pytest.raises(PublishError, match="pending review or is released"):
        await world.publisher(in_place=True).publish(OLD, "r")
    assert world.prefix_contents(OLD_PREFIX) == before
    assert not draft.discarded


def test_generated_reason_counts_and_names() -> None:
    plan = DraftPlan(
        staged=(
            StagedFile("a.csv", Path("/x"), 1, 0),
            StagedFile("b/c.txt", Path("/y"), 1, 0),
            StagedFile("d.nc", Path("/z"), 1, 0),
        ),
        carried=(),
        empty_dirs=(),
        removed=("e.txt", "f.txt"),
    )
    reason = generated_reason(plan, {"a.csv", "e.txt", "f.txt"})
    assert reason == "provenafs: 2 added, 1 changed, 2 removed (a.csv, b/c.txt, d.nc, …)"


def test_service_publishes_quiet_drafts_after_the_delay(tmp_path: Path) -> None:
    world = World(tmp_path)
    plan, _ = world.standard_plan()
    draft = world.drafts.add(OLD, plan)
    clock = FakeClock(1000.0)
    draft.last_change = 1000.0
    service = PublishScheduler(world.publisher(), publish_delay=60, clock=clock)
    assert service.due() == []
    clock.advance(61)
    draft.quiet = False
    assert service.due() == []  # an open writer holds it back
    draft.quiet = True
    assert service.due() == [OLD]


async def test_service_resumes_recorded_versions_and_answers_repeated_commits(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    plan, expected = world.standard_plan()
    draft = world.drafts.add(OLD, plan)

    async def main() -> str:
        # an interrupted publish: the version exists and is recorded, nothing copied yet
        created = await world.datastore.create_version(OLD, "before the crash")
        draft.record_new_version(created.new_version_id)
        service = PublishScheduler(world.publisher(), publish_delay=0)
        await service.run()  # resumes, then returns: the delay is 0 (auto-publish off)
        assert world.drafts.get(OLD) is None
        with pytest.raises(NothingToPublishError) as nothing:
            await service.commit(OLD)
        again = nothing.value.current_handle
        assert again == created.new_version_id
        assert service.status()["published"] == {OLD: again}
        return again

    new = await main()
    assert world.datastore.calls["version"] == 1
    assert world.prefix_contents(s3_path(new)) == expected


async def test_service_records_failures_with_their_cause(tmp_path: Path) -> None:
    world = World(tmp_path)
    plan, _ = world.standard_plan()
    world.drafts.add(OLD, plan)
    world.datastore.refuse_write = api_errors.ForbiddenError("Dataset is pending review")
    service = PublishScheduler(world.publisher(), publish_delay=0)

    with pytest.raises(PublishError):
        await service.commit(OLD, "r")
    status = service.status()
    assert [f["handle"] for f in status["failures"]] == [OLD]
    assert "pending review" in status["failures"][0]["cause"]
    assert status["publishing"] == []
    assert [d["handle"] for d in status["drafts"]] == [OLD]
    assert "fake-secret" not in repr(status)


async def test_service_run_publishes_a_draft_once_it_has_been_quiet_for_the_delay(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    plan, expected = world.standard_plan()
    draft = world.drafts.add(OLD, plan)
    published_at: list[float] = []

    draft.last_change = trio.current_time()
    draft.quiet = False  # an open writer: never published while it stays open
    service = PublishScheduler(
        world.publisher(), publish_delay=60, clock=trio.current_time, poll_interval=5
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.run)
        await trio.sleep(300)
        assert world.drafts.get(OLD) is draft
        draft.quiet = True
        draft.last_change = trio.current_time()
        world.hooks.done = trio.Event()
        # no deadline here: the mock clock would jump to it while a worker thread reads
        await world.hooks.done.wait()
        published_at.append(trio.current_time() - draft.last_change)
        nursery.cancel_scope.cancel()
    assert 60 <= published_at[0] <= 70
    [(new, reason)] = world.datastore.versions_created
    assert reason.startswith("provenafs: 3 added, 1 changed, 2 removed")
    assert world.prefix_contents(s3_path(new)) == expected


# --- a fresh dataset (version 1, only metadata.json) takes its first draft in place ----------


def fresh_world(tmp_path: Path, **record: Any) -> tuple[World, str, str]:
    """A just-minted dataset: version 1 whose prefix holds only the data store's metadata.json."""
    world = World(tmp_path)
    fresh = "10378.1/500"
    world.datastore.add(fresh, **record)
    world.blobs.put_blocking(BUCKET, s3_path(fresh) + "metadata.json", SERVER_METADATA)
    return world, fresh, s3_path(fresh)


def fresh_plan(world: World) -> DraftPlan:
    return DraftPlan(
        staged=(world.staged("a.txt", b"first\n"), world.staged("sub/b.bin", content("b", 3000))),
        carried=(),
        empty_dirs=("empty",),
        removed=(),
    )


async def test_a_fresh_dataset_publishes_its_first_draft_in_place(tmp_path: Path) -> None:
    world, fresh, prefix = fresh_world(tmp_path)
    world.drafts.add(fresh, fresh_plan(world))
    published = await world.publisher().publish(fresh, "first files")
    assert published == fresh  # the dataset itself: no version 2
    assert world.datastore.versions_created == []
    assert world.datastore.calls["version"] == 0
    assert world.prefix_contents(prefix) == {
        "metadata.json": SERVER_METADATA,
        "a.txt": b"first\n",
        "sub/b.bin": content("b", 3000),
        "empty/": b"",
    }
    assert world.hooks.events == [("begin", fresh), ("done", fresh, fresh), ("end", fresh)]


@pytest.mark.parametrize(
    ("why", "record", "extra_key"),
    [
        ("it already holds files", {}, "data.csv"),
        ("it is a later version", {"version": 2, "previous": OLD}, None),
        ("it is pending review", {"release_status": "PENDING"}, None),
        ("it is locked", {"locked": True}, None),
    ],
)
async def test_a_dataset_that_is_not_fresh_gets_a_new_version(
    tmp_path: Path, why: str, record: dict[str, Any], extra_key: str | None
) -> None:
    world, fresh, prefix = fresh_world(tmp_path, **record)
    if extra_key is not None:
        world.blobs.put_blocking(BUCKET, prefix + extra_key, b"x")
    world.drafts.add(fresh, fresh_plan(world))
    published = await world.publisher().publish(fresh, "more")
    assert published != fresh, why
    assert len(world.datastore.versions_created) == 1
    assert world.prefix_contents(prefix).keys() == {"metadata.json", *filter(None, [extra_key])}
