"""``<handle>.cff``: a CITATION.cff (Citation File Format 1.2.0) made from a dataset's record.

The title is the dataset's name; the author its data custodian (a Person: given and family
names, email, ORCID, the organisation as affiliation), else its organisation; the publisher (an
organisation) goes into ``preferred-citation``; the licence is an SPDX id where the URL is a
known Creative Commons one (``license``), else the URL (``license-url``); ``date-released`` is
the published date (else the created date); ``identifiers`` and ``url`` name the handle's
resolver URL ``https://hdl.handle.net/<handle>``; ``version`` is the version number, and
keywords and the description come along. The dataset's own ``preferred_citation`` text goes
into ``message``.

YAML is written by hand (every string double-quoted with JSON's escapes, which YAML reads the
same), so no YAML library is needed. Pure: no I/O; the names of the People and organisations
are looked up by the caller.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

from provenafs.api.models import DatasetRecord, RegistryItem, collection_part

__all__ = ["HANDLE_RESOLVER", "citation_cff", "referenced_ids"]

HANDLE_RESOLVER = "https://hdl.handle.net/"
_MESSAGE = "If you use this dataset, please cite it using the metadata from this file."
_CC = re.compile(
    r"https?://creativecommons\.org/licenses/(by(?:-nc)?(?:-sa|-nd)?)/([0-9.]+)/?", re.IGNORECASE
)
_CC0 = re.compile(r"https?://creativecommons\.org/publicdomain/zero/1\.0/?", re.IGNORECASE)
_ORCID = re.compile(r"(?:https?://orcid\.org/)?([0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{3}[0-9X])")
_EMAIL = re.compile(r"\S+@\S+\.\S{2,}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _info(record: DatasetRecord) -> Mapping[str, Any]:
    return collection_part(record.document, "dataset_info")


def _associations(record: DatasetRecord) -> Mapping[str, Any]:
    return collection_part(record.document, "associations")


def referenced_ids(record: DatasetRecord) -> list[str]:
    """The registry ids the citation names: custodian, organisation, publisher."""
    associations, info = _associations(record), _info(record)
    ids = [
        associations.get("data_custodian_id"),
        associations.get("organisation_id"),
        info.get("publisher_id"),
    ]
    return list(dict.fromkeys(i for i in ids if isinstance(i, str) and i))


def spdx_license(url: str) -> str | None:
    """The SPDX id of a Creative Commons licence URL, or None."""
    if _CC0.fullmatch(url.strip()):
        return "CC0-1.0"
    match = _CC.fullmatch(url.strip())
    if match is None:
        return None
    return f"CC-{match.group(1).upper()}-{match.group(2)}"


def _organisation(item_id: str | None, items: Mapping[str, RegistryItem]) -> dict[str, Any]:
    found = items.get(item_id or "")
    return {"name": (found and (found.name or found.display_name)) or item_id or "unknown"}


def _author(record: DatasetRecord, items: Mapping[str, RegistryItem]) -> dict[str, Any]:
    associations = _associations(record)
    organisation = _organisation(associations.get("organisation_id"), items)
    custodian = items.get(str(associations.get("data_custodian_id") or ""))
    if custodian is None or not (custodian.first_name or custodian.last_name):
        return organisation
    author: dict[str, Any] = {}
    if custodian.last_name:
        author["family-names"] = custodian.last_name
    if custodian.first_name:
        author["given-names"] = custodian.first_name
    if custodian.email and _EMAIL.fullmatch(custodian.email):
        author["email"] = custodian.email
    orcid = _ORCID.search(custodian.orcid or "")
    if orcid is not None:
        author["orcid"] = f"https://orcid.org/{orcid.group(1)}"
    author["affiliation"] = organisation["name"]
    return author


def _date(value: Any) -> str | None:
    if isinstance(value, Mapping) and value.get("relevant") and isinstance(value.get("value"), str):
        text = str(value["value"])
        return text if _DATE.fullmatch(text) else None
    return None


def citation_document(record: DatasetRecord, items: Mapping[str, RegistryItem]) -> dict[str, Any]:
    """The CFF document of *record*, as plain values in the order they are written."""
    info = _info(record)
    url = HANDLE_RESOLVER + record.handle
    title = str(info.get("name") or record.display_name)
    authors = [_author(record, items)]
    released = _date(info.get("published_date")) or _date(info.get("created_date"))
    if released is None:
        released = dt.datetime.fromtimestamp(record.created_timestamp, dt.UTC).date().isoformat()
    citation = info.get("preferred_citation")
    document: dict[str, Any] = {
        "cff-version": "1.2.0",
        "message": f"{_MESSAGE} {citation}" if isinstance(citation, str) and citation else _MESSAGE,
        "type": "dataset",
        "title": title,
        "authors": authors,
    }
    description = info.get("description")
    if isinstance(description, str) and description:
        document["abstract"] = description
    document["date-released"] = released
    document["identifiers"] = [
        {"type": "url", "value": url, "description": "The handle of this dataset version"}
    ]
    document["url"] = url
    if record.versioning is not None:
        document["version"] = str(record.versioning.version)
    licence = info.get("license")
    if isinstance(licence, str) and licence:
        spdx = spdx_license(licence)
        if spdx is not None:
            document["license"] = spdx
        document["license-url"] = licence
    if record.keywords:
        document["keywords"] = list(record.keywords)
    document["preferred-citation"] = {
        "type": "data",
        "title": title,
        "authors": authors,
        "publisher": _organisation(info.get("publisher_id"), items),
        "url": url,
        "year": int(released[:4]),
    }
    return document


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)


def _yaml(value: Any, indent: int) -> list[str]:
    """Block YAML lines of a mapping or list (scalars inline), *indent* spaces deep."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, Mapping | list):
                lines.append(f"{pad}{key}:")
                lines += _yaml(item, indent + 2)
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
        return lines
    for item in value:
        if isinstance(item, Mapping | list):
            nested = _yaml(item, indent + 2)
            lines.append(f"{pad}- {nested[0].lstrip()}")
            lines += nested[1:]
        else:
            lines.append(f"{pad}- {_scalar(item)}")
    return lines


def citation_cff(record: DatasetRecord, items: Mapping[str, RegistryItem]) -> bytes:
    """The ``CITATION.cff`` bytes of *record*; *items* are the registry items it names
    (``referenced_ids``) that could be fetched."""
    lines = ["# CITATION.cff generated by provenafs from the registry record", ""]
    lines += _yaml(citation_document(record, items), 0)
    return ("\n".join(lines) + "\n").encode("utf-8")
