"""Real tools writing into a dataset: ``git clone`` and ``tar x`` (docs/SEMANTICS.md, Writes).

A small local git repository (several commits, a binary file, a deletion) is cloned into a
dataset on a ``-o rw`` mount, and ``git fsck`` on the clone passes there; an archive made with
``tarfile`` (nested directories, an empty directory, a 0-byte file, unicode names, a binary) is
unpacked with ``tar x``. Then ``provenafs commit`` publishes, and the new version's tree, read
through the mount and straight from S3, equals the source byte for byte.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import LocalStore
from tests.e2e.writes_support import (
    StoreApi,
    Tree,
    WritableMount,
    read_tree,
    s3_as_tree,
    s3_tree,
    writes_fixtures,
)

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Writes Test",
    "GIT_AUTHOR_EMAIL": "writes@example.org",
    "GIT_COMMITTER_NAME": "Writes Test",
    "GIT_COMMITTER_EMAIL": "writes@example.org",
    "GIT_CONFIG_NOSYSTEM": "1",
}


store, api, mount = writes_fixtures("writes-tools")


def git(*args: str, cwd: Path | None = None, home: Path) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(home)}
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout


def make_repository(path: Path, home: Path) -> None:
    path.mkdir()
    git("init", "-q", "-b", "main", str(path), home=home)
    (path / "README.md").write_text("# A small repository\n")
    (path / "src").mkdir()
    (path / "src" / "main.py").write_text("print('hello')\n")
    (path / "data.bin").write_bytes(random.Random(5).randbytes(200_000))
    git("add", "-A", cwd=path, home=home)
    git("commit", "-q", "-m", "first", cwd=path, home=home)
    (path / "src" / "main.py").write_text("print('hello, world')\n")
    (path / "docs" / "deep").mkdir(parents=True)
    (path / "docs" / "deep" / "notes ünï.txt").write_text("notes\n")
    (path / "obsolete.txt").write_text("to be removed\n")
    git("add", "-A", cwd=path, home=home)
    git("commit", "-q", "-m", "second", cwd=path, home=home)
    (path / "obsolete.txt").unlink()
    (path / "data.bin").write_bytes(random.Random(6).randbytes(150_000))
    git("add", "-A", cwd=path, home=home)
    git("commit", "-q", "-m", "third", cwd=path, home=home)
    git("tag", "v1", cwd=path, home=home)


def work_tree(root: Path) -> Tree:
    """Files and dirs of a checkout, without ``.git``."""
    tree = read_tree(root)
    return Tree(
        {k: v for k, v in tree.files.items() if not k.startswith(".git/")},
        frozenset(d for d in tree.dirs if d != ".git" and not d.startswith(".git/")),
    )


def make_archive(path: Path) -> Tree:
    """A tar archive (no symlinks: out of scope) and the tree it holds."""
    files = {
        "top.txt": b"top level\n",
        "empty.dat": b"",
        "nested/one/two/deep.bin": random.Random(8).randbytes(2 << 20),
        "nested/ünïcödé ñame.txt": "ünïcödé\n".encode(),
        "nested/one/sibling.csv": b"x,y\n1,2\n",
    }
    dirs = ["nested", "nested/one", "nested/one/two", "nested/empty"]
    with tarfile.open(path, "w") as archive:
        for directory in dirs:
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = 1_700_000_000
            archive.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            archive.addfile(info, io.BytesIO(data))
    return Tree(files, frozenset(dirs))


def prefixed(tree: Tree, prefix: str) -> Tree:
    return Tree(
        {f"{prefix}/{k}": v for k, v in tree.files.items()},
        frozenset({prefix} | {f"{prefix}/{d}" for d in tree.dirs}),
    )


def test_git_clone_and_tar_x_into_a_dataset_then_publish(
    store: LocalStore, mount: WritableMount, tmp_path: Path
) -> None:
    api = StoreApi(store)
    dataset = api.mint("alice", {"existing.txt": b"was here before\n"})
    root = mount.dataset_dir(dataset.handle)
    home = tmp_path / "git-home"
    home.mkdir()

    source = tmp_path / "source-repo"
    make_repository(source, home)
    git("clone", "-q", str(source), str(root / "clone"), home=home)
    git("fsck", "--full", "--strict", cwd=root / "clone", home=home)
    assert work_tree(root / "clone") == work_tree(source)
    assert git("log", "--format=%s", cwd=root / "clone", home=home).split() == [
        "third",
        "second",
        "first",
    ]
    assert git("rev-parse", "v1", cwd=root / "clone", home=home) == git(
        "rev-parse", "v1", cwd=source, home=home
    )

    archive = tmp_path / "archive.tar"
    archived = make_archive(archive)
    os.mkdir(root / "unpacked")
    result = subprocess.run(
        ["tar", "-xf", str(archive), "-C", str(root / "unpacked")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert read_tree(root / "unpacked") == archived

    draft = read_tree(root)  # everything the new version must hold
    assert draft.files["existing.txt"] == b"was here before\n"
    assert prefixed(archived, "unpacked").files.items() <= draft.files.items()

    new_handle = mount.commit_ok(root, "git clone and tar x")
    assert api.versions_after(dataset.handle) == [new_handle]

    # Through the mount: the new version's directory holds exactly the draft's tree.
    published = read_tree(mount.dataset_dir(new_handle))
    assert published.without("metadata.json") == draft.without("metadata.json")
    assert work_tree(mount.dataset_dir(new_handle) / "clone") == work_tree(source)
    assert read_tree(mount.dataset_dir(new_handle) / "unpacked") == archived
    # Straight from S3: the same bytes under the new version's prefix.
    prefix = api.record(new_handle)["item"]["s3"]["path"]
    in_s3 = s3_as_tree(s3_tree(api, prefix))
    assert in_s3.without("metadata.json").files == draft.without("metadata.json").files
    assert in_s3.dirs == draft.dirs
    # The old version is as it was.
    assert read_tree(root).without("metadata.json").files == {"existing.txt": b"was here before\n"}
