"""Caches and the one single-flight mechanism; they know nothing of datasets or S3.

``single_flight.SingleFlight`` (N callers for one key, one call: used by the block cache, the
credential broker and the catalog); ``block_cache.BlockCache`` (a byte-bounded LRU of object
blocks over an optional ``DiskTier``); ``disk_cache.DiskCache`` (that tier: opaque byte keys,
files under a private directory); ``spill.SpillArea`` (unnamed local files behind page-cache
fills).

May import: nothing of provenafs outside this package. Must never: know about S3, datasets,
credentials or drafts; block the trio thread (file I/O goes to threads).
"""
