"""Benchmarks of provenafs against raw S3 and its peers: ``python -m benchmarks`` (scripts/bench).

Not shipped in the wheel (``pyproject.toml`` packages ``provenafs*`` only); run from a checkout
with the project's ``.venv``. ``report`` is pure (rows, targets, table, JSON); ``probe`` measures
a mount from a child process; ``data`` creates the bench datasets and ``scale`` the big cached
ones of ``--scale``; ``peers`` configures s3fs and rclone; ``mounts`` makes fresh mounts of each
column through ``provenafs.testing``; ``workloads`` runs the rows; ``publish`` is the separate
publish-throughput bench (scripts/bench-publish). The local store comes from
``provenafs.server.testing``.

What it must not do: import the mount's internal modules (it runs ``python -m provenafs`` and
reads ``/proc``), touch a mount or process it did not start, or print a secret.
"""
