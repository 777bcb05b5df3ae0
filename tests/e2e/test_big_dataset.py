"""A dataset of 100,000 objects through a real mount: what a walk sees is exactly what S3 holds.

The dataset is the bench's ``objects-100k`` spec (100 folders of 1,000 tiny objects, each
holding its own key), built into this test's temp dir with the bench's builder, so the test and
the scale rows of ``scripts/bench`` read the same shape. The walk compares every name and size
with a raw S3 listing; a sample of objects is read whole and compared byte for byte.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.data import S3Admin
from benchmarks.scale import SPECS, open_scale
from provenafs.testing import start_mount, stop_mount

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

SAMPLE_EVERY = 997  # about 100 objects read, spread over every folder


def s3_sizes(admin: S3Admin, prefix: str) -> dict[str, int]:
    """Every key under *prefix* (relative to it) and its size, from S3 itself."""
    sizes: dict[str, int] = {}
    pages = (
        admin.client().get_paginator("list_objects_v2").paginate(Bucket=admin.bucket, Prefix=prefix)
    )
    for page in pages:
        for item in page.get("Contents", []):
            sizes[item["Key"][len(prefix) :]] = item["Size"]
    return sizes


def walked_sizes(root: Path) -> dict[str, int]:
    """Every file below *root* (relative to it) and its size, as ``os.walk`` and ``stat`` see
    them through the mount."""
    sizes: dict[str, int] = {}
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            sizes[str(path.relative_to(root))] = path.stat().st_size
    return sizes


def test_a_100k_object_dataset_walks_and_reads_as_s3_holds_it(tmp_path: Path) -> None:
    spec = SPECS["objects-100k"]
    with open_scale(tmp_path / "cache", spec, lambda message: None) as (store, data, _built):
        dataset = data.datasets[0]
        expected = s3_sizes(S3Admin.load(store.data_dir), dataset.prefix)
        assert len(expected) >= spec.objects  # the objects, and the store's metadata.json
        mountpoint = tmp_path / "mnt"
        mountpoint.mkdir()
        token = store.token(data.user, offline=True)
        mount = start_mount(
            store.base_url, mountpoint, token_env={"PROVENAFS_OFFLINE_TOKEN": token}
        )
        try:
            root = mountpoint / dataset.handle
            assert walked_sizes(root) == expected
            for index in range(0, spec.objects, SAMPLE_EVERY):
                assert (root / spec.key(index)).read_bytes() == spec.body(index), index
        finally:
            stop_mount(mount)
