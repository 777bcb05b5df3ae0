"""The mount's client for the Provena data store API (docs/API.md) and its Keycloak realm.

``client.DataStoreClient`` speaks the data store's routes and answers frozen records
(``models``); ``realm`` gets and refreshes bearer tokens (device login, refresh and offline
tokens); ``logins`` stores a user's logins and picks the token source of a mount; ``errors``
holds the one exception family every HTTP failure is translated into. Provena's other
services: ``services`` (where they answer: ``ServiceUrls``), ``identity`` (``linked_person``),
``provenance`` (``ProvenanceClient``: model runs, jobs, lineage, registry items) with the
records of ``prov_models``.

The only package of the mount that imports httpx. Raw JSON never leaves it except as the
read-only ``DatasetRecord.document`` that the sidecar renders verbatim (and
``RegistryItem.document``, rendered by ``@runs/``); the wire rules of
metadata payloads (no null fields) live here only (``models.CollectionFormat``).

May import: nothing of provenafs outside this package. Must never: log, print or put into an
exception message a token; import ``provenafs.server`` (the other half shares no code).
"""
