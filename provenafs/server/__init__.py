"""The local data store (``provenafs serve``): a Provena-compatible data store on one machine.

Registry, Keycloak-style auth, SeaweedFS storage with STS-scoped credentials, written against
provena-api.md alone. Nothing here may import from the mount side of provenafs (``provenafs.api``,
``provenafs.blobstore`` and the rest): each side is held to the wire contract by its own tests.
"""
