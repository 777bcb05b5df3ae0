"""The ``provenafs`` command: dispatches each subcommand to the half that owns it.

It must not hold any logic of its own: ``serve`` goes to the local data store
(``provenafs.server.cli``), everything else to the mount's commands
(``provenafs.process.commands``, which holds ``dataset_commands``' table too, and
``new_dataset``).
Imports are lazy so that the mount never loads server code and vice versa.
"""

from __future__ import annotations

import sys

_SERVER_COMMANDS = {"serve"}
_MOUNT_COMMANDS = {
    "mount", "umount", "login", "status", "commit", "revert", "logout", "run", "record", "lineage",
    "whoami", "reviewers", "release", "review", "lock", "unlock",
}  # fmt: skip

_USAGE = """usage: provenafs COMMAND [ARGS...]

commands:
  serve     run the local Provena-compatible data store (see: provenafs serve --help)
  mount     mount a data store:      provenafs mount [SOURCE] MOUNTPOINT [-f] [-o opt,...]
  umount    unmount (publishing or refusing pending drafts)
  login     sign in to a data store with the Keycloak device flow
  logout    forget stored tokens for a data store
  status    show drafts, publishes, cache use and credential expiry of a mount
  commit    publish a dataset's draft as a new version
  revert    restore an earlier metadata history entry of a dataset
  run       run a command, record what it read and wrote, register it as a model run
  record    register a slice of a mount's access log as a model run
  lineage   print a dataset version's lineage as a tree or as Graphviz
  new       mint a dataset (and upload a directory into it): provenafs new NAME [--from DIR]
  whoami    who a mount acts as: username, roles, linked Person
  reviewers list the release reviewers
  release   ask a reviewer to release a dataset: provenafs release PATH --to REVIEWER -m NOTES
  review    approve or reject a release: provenafs review PATH --approve|--reject -m NOTES
  lock      lock a dataset (unlock: the reverse): provenafs lock PATH -m REASON
"""


def main(argv: list[str] | None = None) -> int:
    """Run ``provenafs`` with *argv* (default: ``sys.argv[1:]``) and return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_USAGE, end="")
        return 0 if args else 2
    command = args[0]
    if command in {"-V", "--version"}:
        from provenafs import __version__  # noqa: PLC0415

        print(__version__)
        return 0
    if command in _SERVER_COMMANDS:
        from provenafs.server import cli as server_cli  # noqa: PLC0415

        return server_cli.main(args[1:])
    if command in _MOUNT_COMMANDS:
        from provenafs.process import commands  # noqa: PLC0415

        return commands.main(command, args[1:])
    if command == "new":
        from provenafs.process import new_dataset  # noqa: PLC0415

        return new_dataset.main(args[1:])
    print(f"provenafs: unknown command {command!r}\n\n{_USAGE}", end="", file=sys.stderr)
    return 2


def mount_helper_main(argv: list[str] | None = None) -> int:
    """Entry point for ``mount -t fuse.provenafs SOURCE MOUNTPOINT -o OPTS`` (mount.fuse.provenafs).

    ``mount(8)`` calls helpers as ``mount.fuse.provenafs SOURCE MOUNTPOINT [-o OPTS]``.
    """
    from provenafs.process import commands  # noqa: PLC0415

    args = list(sys.argv[1:] if argv is None else argv)
    return commands.main("mount", args)
