"""The ``--scale`` cache against a real local store: built once, reused, rebuilt when broken.

Tiny specs of the same kinds as the real ones (the real ones take minutes): objects written
straight to S3 and datasets minted through the API, checked with the admin keys and the API.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from benchmarks import scale
from benchmarks.data import DataStoreApi, S3Admin

OBJECTS = scale.ScaleSpec("test-objects", "12 tiny objects in 3 folders", objects=12, folders=3)
PREFIX = scale.ScaleSpec("test-prefix", "3 tiny datasets", datasets=3)

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def test_objects_are_built_once_reused_and_rebuilt_when_broken(tmp_path: Path) -> None:
    said: list[str] = []
    root = scale.spec_dir(tmp_path, OBJECTS)
    with scale.open_scale(tmp_path, OBJECTS, said.append) as (store, data, built_now):
        assert built_now
        admin = S3Admin.load(store.data_dir)
        client = admin.client()
        prefix = data.datasets[0].prefix
        listed = client.list_objects_v2(Bucket=admin.bucket, Prefix=prefix)["Contents"]
        expected = {prefix + OBJECTS.key(index) for index in range(12)} | {prefix + "metadata.json"}
        assert {item["Key"] for item in listed} == expected
        assert {OBJECTS.key(index).split("/")[0] for index in range(12)} == {
            "d0000",
            "d0001",
            "d0002",
        }
        body = client.get_object(Bucket=admin.bucket, Key=prefix + OBJECTS.key(5))["Body"].read()
        assert body == b"d0001/0000005.bin\n"
    assert scale.load_manifest(root, OBJECTS) == data
    assert root.stat().st_mode & 0o777 == 0o700

    with scale.open_scale(tmp_path, OBJECTS, said.append) as (store, again, built_now):
        assert not built_now
        assert again == data
        admin = S3Admin.load(store.data_dir)
        client = admin.client()
        client.delete_object(Bucket=admin.bucket, Key=prefix + OBJECTS.key(11))  # break it

    with scale.open_scale(tmp_path, OBJECTS, said.append) as (store, rebuilt, built_now):
        assert built_now
        assert any("does not check out" in line for line in said)
        admin = S3Admin.load(store.data_dir)
        key = rebuilt.datasets[0].prefix + OBJECTS.key(11)
        assert admin.client().head_object(Bucket=admin.bucket, Key=key)["ContentLength"] == 18

    # a build without its manifest is unfinished: removed (with whatever it holds) and redone
    (root / "manifest.json").unlink()
    (root / "leftover").write_text("from a killed build")
    with scale.open_scale(tmp_path, OBJECTS, said.append) as (_, _, built_now):
        assert built_now
        assert not (root / "leftover").exists()


def test_a_prefix_of_datasets_is_minted_through_the_api(tmp_path: Path) -> None:
    with scale.open_scale(tmp_path, PREFIX, lambda _: None) as (store, data, built_now):
        assert built_now
        assert len({dataset.handle for dataset in data.datasets}) == 3
        assert {dataset.handle.split("/")[0] for dataset in data.datasets} == {data.handle_prefix}
        assert data.s3_parent == "datasets/"
        api = DataStoreApi(store.base_url, store.token(data.user))
        try:
            for dataset in data.datasets:
                item = api.fetch(dataset.handle)["item"]
                assert item["s3"]["path"] == dataset.prefix
                assert item["collection_format"]["dataset_info"]["name"].startswith("scale test")
        finally:
            api.close()
        admin = S3Admin.load(store.data_dir)
        with pytest.raises(ClientError):  # tiny: nothing but the metadata the store wrote
            admin.client().head_object(Bucket=admin.bucket, Key=data.datasets[0].prefix + "x")
