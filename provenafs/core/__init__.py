"""The filesystem core: POSIX semantics of the mount in plain Python types, without FUSE.

``filesystem.Filesystem`` is the façade the FUSE adapter calls, one method per operation; it
delegates to ``namespace`` (the tree) over ``catalog`` (cached records and listings),
``inodes``, ``attributes``, ``refusals`` (every refusal and its errno, in one place),
``handles`` (one class per kind of open file), ``changes`` (every change of a dataset, into
its draft), ``sidecar_edits``, ``kernel_cache`` (invalidations) and ``status``
(``.provenafs/status.json``). ``types`` holds the reply records and the Protocols it is wired
with; ``observation`` what an ``AccessObserver`` (runs, the access log) is told;
``lineage_nodes`` the lookup-only lineage names beside each dataset.

May import: ``read``, ``write``, ``cache``, ``storage``, ``api`` (models and errors; the
client only through Protocols), ``errors``, ``mount_options``. Must never: import pyfuse3,
``fuse_ops``, ``process`` or ``provenafs.server``; make blocking calls (everything runs on the
trio thread, so its tables need no locks); choose an errno for an IO-layer exception (the one
table in ``errors`` does).
"""
