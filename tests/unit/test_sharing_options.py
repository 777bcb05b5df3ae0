"""The options that share a mount with other users, and what reaches the kernel (issue 10 item 5).

``umask=``, ``file_mode=``, ``dir_mode=`` (octal) share read and search bits only;
``default_permissions`` reaches the kernel when given, or when ``allow_other`` shares
something; no accepted key is silently dropped.
"""

from __future__ import annotations

import pytest

from provenafs.mount_options import MountOptions, MountOptionsError, parse_mount_args
from provenafs.process import daemon


def parsed(extra: str) -> MountOptions:
    return parse_mount_args(["http://127.0.0.1:8750", "/mnt/p", "-o", extra])


@pytest.mark.parametrize(
    ("extra", "file_bits", "dir_bits", "kernel_checks"),
    [
        ("rw", 0o077, 0o077, False),  # nobody else reaches it: kept modes show whole
        ("allow_other", 0, 0, False),  # let in, shared with nothing: the core refuses
        ("allow_other,file_mode=0644,dir_mode=0755", 0o044, 0o055, True),
        ("allow_other,file_mode=640,dir_mode=750", 0o040, 0o050, True),
        ("allow_other,umask=022", 0o055, 0o055, True),  # x shows where a kept mode has it
        ("allow_other,umask=077", 0, 0, False),
        ("allow_other,umask=027,file_mode=0604", 0o004, 0o050, True),  # file_mode beats umask
        ("allow_other,file_mode=0666,dir_mode=0777", 0o044, 0o055, True),  # never write bits
        ("default_permissions", 0o077, 0o077, True),
        ("allow_other,default_permissions", 0, 0, True),
    ],
)
def test_shared_bits(extra: str, file_bits: int, dir_bits: int, kernel_checks: bool) -> None:
    options = parsed(extra)
    assert (options.shared_file_bits, options.shared_dir_bits) == (file_bits, dir_bits)
    assert options.kernel_checks_modes is kernel_checks
    fuse_options = daemon.fuse_mount_options(options)
    assert ("default_permissions" in fuse_options) is kernel_checks
    assert ("allow_other" in fuse_options) is options.allow_other


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("umask=999", "octal"),
        ("file_mode=rw-r--r--", "octal"),
        ("dir_mode=01777", "octal"),
        ("umask=", "needs a value"),
        ("default_permissions=1", "takes no value"),
        ("insecure_http=yes", "takes no value"),
        ("subtype=other", "subtype"),
        ("sync", "unknown mount option 'sync'"),
        ("lazytime", "unknown mount option 'lazytime'"),
    ],
)
def test_bad_values_and_unknown_kernel_flags_are_errors(extra: str, message: str) -> None:
    with pytest.raises(MountOptionsError) as refused:
        parsed(extra)
    assert message in str(refused.value)


def test_every_accepted_standard_key_reaches_the_kernel_or_is_mount8s_own() -> None:
    options = parsed(
        "nosuid,nodev,noexec,relatime,default_permissions,fsname=provena,subtype=provenafs,"
        "_netdev,noauto,user,nofail,x-systemd.automount"
    )
    fuse_options = daemon.fuse_mount_options(options)
    assert {"nosuid", "nodev", "noexec", "relatime", "default_permissions"} <= fuse_options
    assert "fsname=provena" in fuse_options and "subtype=provenafs" in fuse_options
    assert not fuse_options & {"_netdev", "noauto", "user", "nofail", "x-systemd.automount"}


def test_insecure_http_is_a_flag() -> None:
    assert parsed("insecure_http").insecure_http
    assert not parsed("rw").insecure_http
