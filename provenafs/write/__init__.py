"""The write path: drafts on local disk, publishing them as new versions, metadata edits.

``drafts`` keeps a dataset's pending changes (an overlay over its base version, staged blobs,
a journal, so no crash loses them); ``publish`` turns a draft into the next version (or, in
place, pushes it into the dataset) and ``PublishScheduler`` decides when; ``change_gate``
orders changes against in-place pushes; ``metadata_edit`` turns a written sidecar into one
metadata update.

Lock order (outermost first; a task takes them only in this order):

1. ``PublishScheduler``'s per-dataset lock: one publish or push of a dataset at a time;
2. the dataset's ``ChangeGate``: exclusive for a publish or push (``Publisher`` takes it
   through the ``begin_publish`` hook), shared for every change (``core.changes``);
3. a file's path lock in ``core.changes.DraftChanges``: copy-on-write of one file, always
   inside a shared hold of its dataset's gate.

So a task never starts a publish or push while it holds a gate shared (the push would wait for
itself; changes push in place after letting go), and shared holds do not nest in one task.
``ChangeGate`` asserts both per task, and ``DraftChanges`` asserts 3 inside 2.

May import: ``storage``, ``cache``, ``api`` (models and errors; the client only through
Protocols), ``errors``. Must never import ``read``, ``core``, ``process``, ``fuse_ops``, pyfuse3
or ``provenafs.server``; never block the trio thread (disk and hashing go to threads).
"""
