"""provenafs: mount a Provena data store as a directory tree.

Two halves that share no code: the mount (everything outside ``provenafs.server``) and the
local Provena-compatible data store (``provenafs.server``). Each is written against
the data store API (docs/API.md); contract tests hold both to it.
"""

__version__ = "0.1.0"
