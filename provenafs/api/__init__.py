"""The mount's client for the Provena data store API (and its Keycloak realm).

The only package of the mount that imports httpx. Raw JSON never leaves it except as the
read-only ``DatasetRecord.document`` that the sidecar renders verbatim.
"""
