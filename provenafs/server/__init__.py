"""The local data store (``provenafs serve``): a Provena-compatible data store on one machine.

Registry, Keycloak-style auth, SeaweedFS storage with STS-scoped credentials, written against
docs/API.md alone; beside the data store, the parts of Provena's registry, prov, job, search
and auth APIs a mount needs (``services.py`` wires them). Nothing here may import from the mount
side of provenafs (``provenafs.api``, ``provenafs.storage`` and the rest): each side is held to
the wire contract by its own tests.
"""
