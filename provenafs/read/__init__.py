"""The read path: the bytes of one open object, and prefetching what comes next.

``reader.ObjectReader`` serves one open file from the block cache and S3 (sequential windows
under one ``PrefetchBudget``, a whole-object fill into the kernel's page cache for random
readers, spilled to local files); ``sibling_prefetch`` fetches ahead what the next files of a
folder need once a file's first read is answered.

May import: ``cache``, ``storage``, ``api`` (models and errors), ``errors``. Must never import
``write`` (reads never see drafts: the core decides which bytes a file has), ``core``,
``process``, ``fuse_ops``, pyfuse3 or ``provenafs.server``; never block the trio thread.
"""
