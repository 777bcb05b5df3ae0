"""Tokens never travel over plain http to another machine (issue 10 item 7), seen from outside.

``provenafs mount -f`` and ``provenafs login`` run as real processes against recording
listeners on 127.0.0.1 that play a data store (its discovery document names the realm) and a
Keycloak realm; each listener records every request: path, ``Authorization`` header and body.
``http://0.0.0.0:PORT`` reaches a listener on this machine but is no loopback address, so it
stands for "plain http to another machine"; the https data store uses a certificate made here
(trusted through ``SSL_CERT_FILE``). Each refusal must come with a clear message before any
token leaves: the listeners never see a bearer, an offline token or a device-flow request. No
mount is ever made (the daemon stops before it mounts), so FUSE is not needed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.server
import ipaddress
import json
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provenafs.testing import isolated_environment
from tests.conftest import LocalStore

BEARER = "bearer-secret-9f3a"
OFFLINE = "offline-secret-77c1"
REALM_PATH = "/auth/realms/provena"


@dataclasses.dataclass(frozen=True)
class Seen:
    method: str
    path: str
    authorization: str | None
    body: bytes


class Listener:
    """An HTTP(S) server on 127.0.0.1 that records every request and answers a few."""

    def __init__(self, discovery: dict[str, object] | None, tls: ssl.SSLContext | None = None):
        self.seen: list[Seen] = []
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                authorization = self.headers.get("Authorization")
                listener.seen.append(Seen(self.command, self.path, authorization, body))
                if self.path == "/.well-known/provenafs" and discovery is not None:
                    answer = json.dumps(discovery).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                else:
                    answer = b'{"detail": "refused"}'
                    self.send_response(401)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = _record

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def secrets_seen(self) -> list[Seen]:
        return [
            s
            for s in self.seen
            if s.authorization is not None or OFFLINE.encode() in s.body or s.path != DISCOVERY
        ]


DISCOVERY = "/.well-known/provenafs"


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    made: list[Listener] = []
    yield made
    for listener in made:
        listener.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (file, key file)."""
    directory = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def tls_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def discovery_naming(realm_url: str) -> dict[str, object]:
    return {
        "s3_endpoint_url": None,
        "region": "ap-southeast-2",
        "realm_url": realm_url,
        "bucket": "b",
        "client_id": "c",
    }


def provenafs(
    tmp_path: Path, *args: str, token_env: dict[str, str], extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = isolated_environment(tmp_path / "home", token_env)
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "provenafs", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def mount(
    tmp_path: Path, source: str, *options: str, token_env: dict[str, str], **kwargs: object
) -> subprocess.CompletedProcess[str]:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir(exist_ok=True)
    argv = ["mount", source, str(mountpoint), "-f", *options]
    return provenafs(tmp_path, *argv, token_env=token_env, **kwargs)  # type: ignore[arg-type]


def test_a_plain_http_data_store_elsewhere_gets_no_bearer(
    tmp_path: Path, listeners: list[Listener]
) -> None:
    store = Listener(discovery_naming("https://auth.example.invalid" + REALM_PATH))
    listeners.append(store)
    result = mount(tmp_path, f"http://0.0.0.0:{store.port}", token_env={"PROVENAFS_TOKEN": BEARER})
    assert result.returncode == 1, result.stderr
    assert "plain http to another machine" in result.stderr and "insecure_http" in result.stderr
    assert store.seen == []  # refused before discovery, so before any bearer
    assert BEARER not in result.stderr + result.stdout


def test_insecure_http_lets_the_bearer_go(tmp_path: Path, listeners: list[Listener]) -> None:
    """The opt-in works: the same data store then gets the bearer (and refuses it here)."""
    store = Listener(discovery_naming("https://auth.example.invalid" + REALM_PATH))
    listeners.append(store)
    result = mount(
        tmp_path,
        f"http://0.0.0.0:{store.port}",
        "-o",
        "insecure_http",
        token_env={"PROVENAFS_TOKEN": BEARER},
    )
    assert result.returncode == 1  # the listener answers 401
    assert f"Bearer {BEARER}" in [s.authorization for s in store.seen]


def test_discovery_cannot_send_the_offline_token_over_plain_http(
    tmp_path: Path, listeners: list[Listener]
) -> None:
    """A loopback http data store whose discovery names a plain-http realm elsewhere."""
    realm = Listener(None)
    store = Listener(discovery_naming(f"http://0.0.0.0:{realm.port}{REALM_PATH}"))
    listeners += [realm, store]
    result = mount(
        tmp_path,
        f"http://127.0.0.1:{store.port}",
        token_env={"PROVENAFS_OFFLINE_TOKEN": OFFLINE},
    )
    assert result.returncode == 1, result.stderr
    assert "the Keycloak realm" in result.stderr and "plain http" in result.stderr
    assert realm.seen == []
    assert store.secrets_seen() == []
    assert OFFLINE not in result.stderr + result.stdout


def test_an_https_data_store_never_leads_the_offline_token_to_http(
    tmp_path: Path, listeners: list[Listener], certificate: tuple[Path, Path]
) -> None:
    """Even a loopback realm (another local user may hold that port), even with insecure_http."""
    realm = Listener(None)
    store = Listener(
        discovery_naming(f"http://127.0.0.1:{realm.port}{REALM_PATH}"), tls_context(certificate)
    )
    listeners += [realm, store]
    result = mount(
        tmp_path,
        f"https://127.0.0.1:{store.port}",
        "-o",
        "insecure_http",
        token_env={"PROVENAFS_OFFLINE_TOKEN": OFFLINE},
        extra_env={"SSL_CERT_FILE": str(certificate[0])},
    )
    assert result.returncode == 1, result.stderr
    assert "is https" in result.stderr, result.stderr
    assert [s.path for s in store.seen] == [DISCOVERY]  # TLS worked: discovery was answered
    assert store.secrets_seen() == [] and realm.seen == []


def test_login_refuses_before_the_device_flow(
    tmp_path: Path, listeners: list[Listener], certificate: tuple[Path, Path]
) -> None:
    realm = Listener(None)
    store = Listener(
        discovery_naming(f"http://127.0.0.1:{realm.port}{REALM_PATH}"), tls_context(certificate)
    )
    plain = Listener(discovery_naming(f"http://127.0.0.1:{realm.port}{REALM_PATH}"))
    listeners += [realm, store, plain]
    env = {"SSL_CERT_FILE": str(certificate[0])}
    refused = provenafs(
        tmp_path, "login", f"https://127.0.0.1:{store.port}", token_env={}, extra_env=env
    )
    assert refused.returncode == 1 and "is https" in refused.stderr, refused.stderr
    elsewhere = provenafs(tmp_path, "login", f"http://0.0.0.0:{plain.port}", token_env={})
    assert elsewhere.returncode == 1
    assert "plain http to another machine" in elsewhere.stderr, elsewhere.stderr
    assert realm.seen == [] and plain.seen == []
    assert [s.path for s in store.seen] == [DISCOVERY]
    # The opt-in: discovery, then the device flow starts at the realm (which refuses it).
    allowed = provenafs(
        tmp_path, "login", f"http://0.0.0.0:{plain.port}", "--insecure-http", token_env={}
    )
    assert allowed.returncode == 1
    assert [s.path for s in plain.seen] == [DISCOVERY]
    assert realm.seen and realm.seen[0].path.startswith(REALM_PATH)


@pytest.mark.s3
def test_an_s3_endpoint_or_service_over_plain_http_elsewhere_gets_no_token(
    tmp_path: Path, listeners: list[Listener], local_store: LocalStore
) -> None:
    """The data store is loopback and trusted; an S3 endpoint or a prov API named over plain
    http to another machine (by an option here; a discovery answer goes through the same check)
    is refused before the mount sends it anything."""
    token = {"PROVENAFS_OFFLINE_TOKEN": local_store.token("alice", offline=True)}
    for option, what in (("s3_endpoint", "the S3 endpoint"), ("prov_api", "the prov api")):
        elsewhere = Listener(None)
        listeners.append(elsewhere)
        attempt = tmp_path / option
        attempt.mkdir()
        url = f"http://0.0.0.0:{elsewhere.port}"
        result = mount(attempt, local_store.base_url, "-o", f"{option}={url}", token_env=token)
        assert result.returncode == 1, result.stderr
        assert what in result.stderr and "plain http" in result.stderr, result.stderr
        assert elsewhere.seen == []
        assert token["PROVENAFS_OFFLINE_TOKEN"] not in result.stderr + result.stdout


def test_new_refuses_plain_http_before_any_token_goes(
    tmp_path: Path, listeners: list[Listener]
) -> None:
    """``provenafs new`` (here ``--init``, which connects at once) holds to the same rule."""
    realm, prov = Listener(None), Listener(None)
    elsewhere_store = Listener(discovery_naming("https://auth.example.invalid" + REALM_PATH))
    led_to_realm = Listener(discovery_naming(f"http://0.0.0.0:{realm.port}{REALM_PATH}"))
    led_to_prov = Listener(
        discovery_naming("https://auth.example.invalid" + REALM_PATH)
        | {"prov_api": f"http://0.0.0.0:{prov.port}"}
    )
    listeners += [realm, prov, elsewhere_store, led_to_realm, led_to_prov]
    tokens = {"PROVENAFS_TOKEN": BEARER, "PROVENAFS_OFFLINE_TOKEN": OFFLINE}
    for source, what in (
        (f"http://0.0.0.0:{elsewhere_store.port}", "the data store"),
        (f"http://127.0.0.1:{led_to_realm.port}", "the Keycloak realm"),
        (f"http://127.0.0.1:{led_to_prov.port}", "the prov api"),
    ):
        refused = provenafs(tmp_path, "new", "--init", "--source", source, token_env=tokens)
        assert refused.returncode == 1, refused.stderr
        assert what in refused.stderr and "plain http" in refused.stderr, refused.stderr
        assert BEARER not in refused.stderr + refused.stdout
    assert elsewhere_store.seen == []  # refused before discovery
    assert led_to_realm.secrets_seen() == [] and led_to_prov.secrets_seen() == []
    assert realm.seen == [] and prov.seen == []
