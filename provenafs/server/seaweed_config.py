"""What the local SeaweedFS is told: its IAM/STS file and the ``security.toml`` locking its ports.

``iam_config`` is the identities/STS/roles file: one admin identity (the data store), and a role
that only that identity may assume and that reaches only the bucket's objects, so the scoped
credentials the store hands out can neither widen themselves nor touch IAM.

``security_toml`` locks every SeaweedFS port but the S3 gateway to the data store's own process:
JWT signing keys for the volume server (reads and writes) and the filer (reads and writes), so
their HTTP ports refuse unsigned requests, and mutual TLS on every gRPC port with a certificate
made at each start by a private CA whose key is thrown away at once (``write_grpc_certificates``).
weed finds the file through ``-config_dir`` (and its working directory), both the 0700 ``s3`` dir.

It must not start processes, and must never log a key. Every file it writes is 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provenafs.server.objects import DEFAULT_ROLE_ARN, MAX_SESSION_SECONDS, ROLE_NAME
from provenafs.server.private_files import write_private

__all__ = [
    "ADMIN_IDENTITY",
    "ADMIN_PRINCIPAL_ARN",
    "JWT_KEY_NAMES",
    "GrpcCertificates",
    "iam_config",
    "security_toml",
    "write_grpc_certificates",
]

ADMIN_IDENTITY = "provenafs-data-store"
# how SeaweedFS names a configured identity in trust policies (its fixed account 000000000000)
ADMIN_PRINCIPAL_ARN = f"arn:aws:iam::000000000000:user/{ADMIN_IDENTITY}"
# the secrets.json names of the JWT keys: volume writes, volume reads, filer writes, filer reads
JWT_KEY_NAMES = ("volume_write_jwt", "volume_read_jwt", "filer_write_jwt", "filer_read_jwt")
# every weed component that serves or dials gRPC reads its certificate from its own section
_GRPC_COMPONENTS = (
    "master",
    "volume",
    "filer",
    "s3",
    "admin",
    "worker",
    "msg_broker",
    "msg_agent",
    "mq",
    "client",
)
_CERTIFICATE_DAYS = 3650  # made afresh at every start: the length only has to outlive a run


def iam_config(keys: dict[str, str], bucket: str) -> dict[str, Any]:
    """The one JSON file weed reads as identities config and as IAM/STS config.

    Only the data store's own identity may assume the role (the trust policy names it), so the
    credentials it hands out cannot ask STS for a wider session; and the role itself reaches only
    the bucket's objects (no IAM, no STS, no other bucket), whatever a session policy says.
    """
    bucket_only = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }
    return {
        "identities": [
            {
                "name": ADMIN_IDENTITY,
                "credentials": [
                    {"accessKey": keys["access_key_id"], "secretKey": keys["secret_access_key"]}
                ],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ],
        "sts": {
            "tokenDuration": "1h",
            "maxSessionLength": f"{MAX_SESSION_SECONDS // 3600}h",
            "issuer": "provenafs-local-sts",
            "signingKey": keys["sts_signing_key"],
        },
        "policy": {"defaultEffect": "Deny", "storeType": "memory"},
        "policies": [{"name": "ProvenaBucketObjects", "document": bucket_only}],
        "roles": [
            {
                "roleName": ROLE_NAME,
                "roleArn": DEFAULT_ROLE_ARN,
                "attachedPolicies": ["ProvenaBucketObjects"],
                "trustPolicy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"AWS": ADMIN_PRINCIPAL_ARN},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                },
            }
        ],
    }


class GrpcCertificates:
    """Where the gRPC CA certificate and the one certificate and key every component uses live."""

    def __init__(self, directory: Path) -> None:
        self.ca = directory / "grpc-ca.pem"
        self.cert = directory / "grpc-cert.pem"
        self.key = directory / "grpc-key.pem"


def write_grpc_certificates(directory: Path, host: str) -> GrpcCertificates:
    """Make a private CA, sign one certificate with it for every gRPC port, drop the CA's key.

    weed's components share the certificate both as servers and as clients (mutual TLS); with the
    CA's key gone nobody can sign another one, so only this weed and whoever reads the 0600 key
    file may speak gRPC to it.
    """
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "provenafs local store CA")])
    ca_cert = (
        _certificate_builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signing=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for address in dict.fromkeys(["127.0.0.1", host]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            names.append(x509.DNSName(address))
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "provenafs-seaweedfs")])
    cert = (
        _certificate_builder(leaf_name, ca_name, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signing=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = GrpcCertificates(directory)
    write_private(files.ca, ca_cert.public_bytes(serialization.Encoding.PEM))
    write_private(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    write_private(
        files.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return files


def security_toml(keys: dict[str, str], certificates: GrpcCertificates) -> str:
    """weed's ``security.toml``: JWT keys for the volume and filer HTTP ports, mTLS for gRPC."""

    def quoted(value: str | Path) -> str:
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string

    volume_write, volume_read, filer_write, filer_read = (keys[name] for name in JWT_KEY_NAMES)
    lines = [
        "# Written by provenafs serve at every start; edits are lost.",
        "[jwt.signing]",
        f"key = {quoted(volume_write)}",
        "expires_after_seconds = 10",
        "[jwt.signing.read]",
        f"key = {quoted(volume_read)}",
        "expires_after_seconds = 10",
        "[jwt.filer_signing]",
        f"key = {quoted(filer_write)}",
        "expires_after_seconds = 10",
        "[jwt.filer_signing.read]",
        f"key = {quoted(filer_read)}",
        "expires_after_seconds = 60",
        "[access]",
        "ui = false",
        "[filer.expose_directory_metadata]",
        "enabled = false",
        "[grpc]",
        f"ca = {quoted(certificates.ca)}",
    ]
    for component in _GRPC_COMPONENTS:
        lines += [
            f"[grpc.{component}]",
            f"cert = {quoted(certificates.cert)}",
            f"key = {quoted(certificates.key)}",
        ]
    return "\n".join(lines) + "\n"


def _certificate_builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: dt.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_CERTIFICATE_DAYS))
    )


def _key_usage(*, signing: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not signing,
        key_cert_sign=signing,
        crl_sign=signing,
        encipher_only=False,
        decipher_only=False,
    )
