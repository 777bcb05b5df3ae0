"""The mount's processes: the commands a user runs and the daemon that serves one mount.

``commands`` (``provenafs mount``, ``umount``, ``login``, ``logout``, ``status``, ``commit``,
``revert``) parses arguments and talks to the user; ``daemon`` builds every layer below for one
mount and serves it until unmounted; ``control_socket`` is the daemon's Unix socket for the
commands; ``mounts`` says where a mount is and where its daemon logs; ``kernel_readahead`` sets
the mount device's readahead. Runs: ``run_command`` (``provenafs run``, ``record``,
``lineage``), ``runs`` (the daemon's ``RunManager``: observation, publishing, registration),
``attribution`` (which run a process is), ``run_journal``, ``run_record`` (the run log and the
model run record), ``run_control`` (the control socket's run operations), ``access_log``,
``run_templates`` (the remembered workflow template).

May import: everything of the mount (``fuse_ops``, ``core``, ``write``, ``read``, ``cache``,
``storage``, ``api``, ``errors``, ``mount_options``). Must never: import ``provenafs.server``;
hold filesystem semantics (those are ``core``'s); make syscalls against the mount its own
daemon serves; load the FUSE daemon (pyfuse3) for a command that does not mount.
"""
