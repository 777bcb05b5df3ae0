"""``parse_mount_args``: defaults, sizes, our keys, standard fstab/FUSE keys, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provenafs.api.services import SERVICE_KEYS
from provenafs.mount_options import (
    DEFAULT_SOURCE,
    SERVICE_OPTIONS,
    MountOptionsError,
    parse_mount_args,
    parse_size,
)


def test_defaults_with_only_a_mountpoint() -> None:
    options = parse_mount_args(["/mnt/p"])
    assert options.source == DEFAULT_SOURCE == "http://127.0.0.1:8750"
    assert options.mountpoint == Path("/mnt/p")
    assert not options.foreground and not options.debug
    assert options.cache_dir is None
    assert options.memory_cache_size + options.prefetch_budget <= 128 << 20  # RSS < 256 MiB
    assert options.memory_cache_size == 64 << 20
    assert options.prefetch_budget == 64 << 20
    assert options.read_ahead == 1 << 20
    assert options.spill_size == 1 << 30
    assert (options.uid, options.gid) == (os.getuid(), os.getgid())
    assert not options.allow_other
    assert not options.read_only  # writes become drafts unless -o ro
    assert dict(options.extra) == {}
    assert options.write_mode == "draft" and options.on_unmount == "publish"
    assert options.state_dir is None and options.reason is None
    assert options.publish_delay == 300.0


def test_write_side_keys() -> None:
    options = parse_mount_args(
        [
            "/mnt/p",
            "-o",
            "writes=in-place,state_dir=~/state,publish_delay=0,on_unmount=refuse,reason=nightly",
        ]
    )
    assert options.write_mode == "in-place"
    assert options.state_dir == Path("~/state").expanduser()
    assert options.publish_delay == 0.0
    assert options.on_unmount == "refuse"
    assert options.reason == "nightly"


def test_every_key() -> None:
    options = parse_mount_args(
        [
            "https://data-api.example.org/",
            "~/provena",
            "-f",
            "-o",
            "cache_dir=~/cache,cache_size=2G,memory_cache_size=512M,prefetch_budget=32MiB,read_ahead=0,spill_size=0",
            "-oallow_other,ro,uid=1234,gid=55,metadata_ttl=12.5,listing_ttl=600",
            "-o",
            "offline_token_file=/run/token,debug",
        ]
    )
    assert options.source == "https://data-api.example.org"
    assert options.mountpoint == Path("~/provena").expanduser()
    assert options.foreground and options.debug
    assert options.cache_dir == Path("~/cache").expanduser()
    assert options.cache_size == 2 << 30
    assert options.memory_cache_size == 512 << 20
    assert options.prefetch_budget == 32 << 20
    assert options.read_ahead == 0 and options.spill_size == 0
    assert options.allow_other and options.read_only
    assert (options.uid, options.gid) == (1234, 55)
    assert (options.metadata_ttl, options.listing_ttl) == (12.5, 600.0)
    assert options.offline_token_file == Path("/run/token")


def test_standard_fstab_and_fuse_keys_are_accepted() -> None:
    options = parse_mount_args(
        [
            "http://127.0.0.1:9000",
            "/mnt/p",
            "-n",
            "-s",
            "-t",
            "fuse.provenafs",
            "-o",
            "rw,auto_unmount,nodev,nosuid,noatime,_netdev,defaults,noauto,user,"
            "x-systemd.automount,x-systemd.idle-timeout=60",
        ]
    )
    assert not options.read_only
    assert set(options.extra) == {
        "auto_unmount",
        "nodev",
        "nosuid",
        "noatime",
        "_netdev",
        "defaults",
        "noauto",
        "user",
        "x-systemd.automount",
        "x-systemd.idle-timeout",
    }
    assert options.extra["x-systemd.idle-timeout"] == "60"


def test_debug_flag_implies_foreground() -> None:
    options = parse_mount_args(["/mnt/p", "-d"])
    assert options.debug and options.foreground


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["/mnt/p", "-o", "colour=blue"], "unknown mount option 'colour'"),
        (["/mnt/p", "-o", "cache_size=lots"], "not a size"),
        (["/mnt/p", "-o", "cache_size="], "needs a value"),
        (["/mnt/p", "-o", "uid=root"], "numeric id"),
        (["/mnt/p", "-o", "metadata_ttl=soon"], "wants seconds"),
        (["/mnt/p", "-o", "metadata_ttl=-1"], "must not be negative"),
        (["/mnt/p", "-o", "metadata_ttl=nan"], "finite number of seconds"),
        (["/mnt/p", "-o", "prov_timeout=inf"], "finite number of seconds"),
        (["/mnt/p", "-o", "uid=\u00b2"], "numeric id"),
        (["/mnt/p", "-o", "lineage_depth=\u00b2"], "number of hops from 1 to 10"),
        (["/mnt/p", "-o", "ro,rw"], "contradict"),
        (["/mnt/p", "-o", "allow_other=yes"], "takes no value"),
        (["/mnt/p", "-o"], "needs a value"),
        (["/mnt/p", "--verbose"], "unknown flag"),
        ([], "usage"),
        (["a", "b", "c"], "usage"),
        (["ftp://host", "/mnt/p"], "http(s) URL"),
        (["/mnt/p", "-o", "writes=sometimes"], "-o writes= is one of draft, in-place"),
        (["/mnt/p", "-o", "on_unmount=maybe"], "-o on_unmount= is one of publish, refuse"),
    ],
)
def test_errors_are_clear(argv: list[str], message: str) -> None:
    with pytest.raises(MountOptionsError) as excinfo:
        parse_mount_args(argv)
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4096", 4096),
        ("64K", 64 << 10),
        ("512M", 512 << 20),
        ("512m", 512 << 20),
        ("2G", 2 << 30),
        ("2GiB", 2 << 30),
        ("1.5G", 3 << 29),
        ("1T", 1 << 40),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_discovery_overrides_for_a_real_deployment() -> None:
    options = parse_mount_args(
        [
            "https://data-api.example.org",
            "/mnt/p",
            "-o",
            "realm_url=https://auth.example.org/auth/realms/provena,region=us-east-1,"
            "s3_endpoint=https://s3.example.org",
        ]
    )
    assert options.realm_url == "https://auth.example.org/auth/realms/provena"
    assert options.s3_endpoint == "https://s3.example.org"
    assert options.region == "us-east-1"
    plain = parse_mount_args(["/mnt/p"])
    assert (plain.realm_url, plain.s3_endpoint, plain.region) == (None, None, None)


def test_the_service_options_are_the_services_the_api_knows() -> None:
    assert SERVICE_OPTIONS == SERVICE_KEYS  # -o prov_api= and the like name every service
