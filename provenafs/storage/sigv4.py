"""AWS Signature Version 4 headers for one S3 request without a body: ``sign_s3_request``.

The mount's hot path (ranged GETs of blocks, small files and heads, and listings) signs its
requests here and sends them over a plain connection pool, because a botocore call costs about
1 ms of CPU under the GIL and these requests come by the thousand. Path-style URLs only; the
payload is empty (its SHA-256 is signed). Signing keys are derived once per (secret, day,
region) and kept in a small cache.

This module is pure computation: it must not do I/O, log, or keep a secret anywhere but its
signing-key cache (never in a message, an exception or a ``repr``).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping

__all__ = ["EMPTY_SHA256", "s3_path", "s3_query", "sign_s3_request"]

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_ALGORITHM = "AWS4-HMAC-SHA256"


def s3_path(bucket: str, key: str | None = None) -> str:
    """The path-style, URI-encoded path of an object, or of the bucket without ``key`` (S3
    encodes each byte once, keeps ``/``)."""
    path = "/" + urllib.parse.quote(bucket, safe="")
    return path if key is None else path + "/" + urllib.parse.quote(key, safe="/-_.~")


def s3_query(parameters: Mapping[str, str]) -> str:
    """The canonical query string: parameters sorted by name, names and values encoded once
    (unreserved characters kept). The request must carry exactly this string."""
    quote = functools.partial(urllib.parse.quote, safe="-_.~")
    return "&".join(f"{quote(name)}={quote(value)}" for name, value in sorted(parameters.items()))


@functools.lru_cache(maxsize=64)
def _signing_key(secret: str, day: str, region: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def sign_s3_request(
    *,
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    access_key_id: str,
    secret_access_key: str,
    session_token: str | None,
    region: str,
    query: str = "",
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """Every header the request must carry (``headers`` included), with ``Authorization``.

    ``host`` is the ``Host`` header (with a port if not the scheme's default); ``path`` is
    already encoded (``s3_path``); ``query`` is the request's query string as ``s3_query``
    made it; the request has no body.
    """
    moment = now or dt.datetime.now(dt.UTC)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    signed = {name.lower(): " ".join(str(value).split()) for name, value in headers.items()}
    signed["host"] = host
    signed["x-amz-content-sha256"] = EMPTY_SHA256
    signed["x-amz-date"] = amz_date
    if session_token:
        signed["x-amz-security-token"] = session_token
    names = sorted(signed)
    canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in names)
    signed_names = ";".join(names)
    canonical_request = "\n".join(
        (method, path, query, canonical_headers, signed_names, EMPTY_SHA256)
    )
    scope = f"{day}/{region}/s3/aws4_request"
    string_to_sign = "\n".join(
        (_ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
    )
    signature = hmac.new(
        _signing_key(secret_access_key, day, region), string_to_sign.encode(), hashlib.sha256
    ).hexdigest()
    signed["authorization"] = (
        f"{_ALGORITHM} Credential={access_key_id}/{scope}, "
        f"SignedHeaders={signed_names}, Signature={signature}"
    )
    return signed
