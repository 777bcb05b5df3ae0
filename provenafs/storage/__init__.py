"""Object storage: the ``BlobStore`` seam, its S3 implementation, and the credentials it needs.

``blobstore`` is the protocol with its value types and exceptions and an in-memory fake;
``s3.S3BlobStore`` implements it (the mount's only boto3 importer; reads signed by ``sigv4`` and
sent on a urllib3 pool); ``credentials.CredentialBroker`` holds each dataset's STS credentials
and renews them ahead of expiry.

May import: ``api`` (models and errors), ``cache`` (``SingleFlight``). Must never: import
``core``, ``read``, ``write``, ``process``, ``fuse_ops`` or ``provenafs.server``; know what a
dataset means beyond the credentials of its handle; log or print a secret.
"""
