"""``provenafs serve --seed``: the registry items a model run needs, loaded idempotently.

For every sample user a Person (owned by that user, as the auth API's link rule wants) and its
username link; the sample organisation and data custodian as complete registry records; the
release reviewer list naming the admin's Person; and a generic workflow template for
``provenafs run``: a MODEL "provenafs run", DATASET_TEMPLATEs "any input" and "any output" with
no deferred resources, and a MODEL_RUN_WORKFLOW_TEMPLATE taking both as optional. Items are
created through :class:`EntityRegistry`, as ``POST …/create`` would, and their handles are kept in
the registry's meta table so a second seeding adds nothing.

This module must not import from the mount side, nor run at import time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from provenafs.server.access import AccessSettings
from provenafs.server.entities import ROUTE_BY_SUBTYPE, EntityRegistry
from provenafs.server.registry import Registry
from provenafs.server.registry_models import (
    DatasetTemplateDomainInfo,
    DomainInfo,
    ItemSubType,
    ModelDomainInfo,
    ModelRunWorkflowTemplateDomainInfo,
    OrganisationDomainInfo,
    PersonDomainInfo,
    item_model,
)

__all__ = ["seed_entities"]

NAMES = {"alice": "Alice Anderson", "bob": "Bob Brown", "carol": "Carol Chen", "admin": "Ada Admin"}


class _Caller:
    """A local user acting through :class:`EntityRegistry` (the ``Caller`` protocol)."""

    def __init__(self, username: str, email: str | None, roles: tuple[str, ...]) -> None:
        self.username = username
        self.email = email
        self.roles = roles
        self.token = ""


def _caller(registry: Registry, username: str) -> _Caller:
    account = registry.get_user(username)
    assert account is not None, username
    return _Caller(account.username, account.email, account.realm_roles)


def _create_once(
    entities: EntityRegistry, key: str, subtype: ItemSubType, domain: DomainInfo, owner: _Caller
) -> str:
    registry = entities.registry
    known = registry.get_meta(key)
    if known is not None:
        return known
    created = entities.create(ROUTE_BY_SUBTYPE[subtype], domain, owner)
    assert created["created_item"] is not None, created["status"]
    handle = str(created["created_item"]["id"])
    registry.set_meta(key, handle)
    return handle


def _complete_legacy(registry: Registry, item_id: str, domain: DomainInfo, owner: str) -> None:
    """Turn a bare sample item (written by older seeds) into a complete registry record."""
    with registry.transaction() as db:
        current = registry.item_document(db, item_id)
        if current is not None and "history" in current:
            return
        subtype = ItemSubType(current["item_subtype"]) if current else None
        if subtype is None:
            subtype = (
                ItemSubType.PERSON
                if isinstance(domain, PersonDomainInfo)
                else ItemSubType.ORGANISATION
            )
        now = int(time.time())
        document = (
            item_model(subtype)[0]
            .model_validate(
                {
                    **domain.model_dump(),
                    "history": [
                        {
                            "id": 0,
                            "timestamp": now,
                            "reason": "Initial record creation",
                            "username": owner,
                            "item": domain.model_dump(),
                        }
                    ],
                    "id": item_id,
                    "owner_username": owner,
                    "created_timestamp": now,
                    "updated_timestamp": now,
                }
            )
            .model_dump(mode="json")
        )
        registry.write_item(db, document, access=AccessSettings(owner, ("metadata-read",), {}))


def seed_entities(
    entities: EntityRegistry,
    users: Mapping[str, str],
    *,
    organisation_id: str,
    custodian_id: str,
) -> dict[str, Any]:
    """Persons and links for *users* (username → email), the sample organisation and custodian,
    the reviewer list and the generic workflow template; returns the manifest entries."""
    registry = entities.registry
    _complete_legacy(
        registry,
        organisation_id,
        OrganisationDomainInfo(
            display_name="Example Research Organisation",
            name="Example Research Organisation",
            ror="https://ror.org/03qn8fb07",
        ),
        "admin",
    )
    _complete_legacy(
        registry,
        custodian_id,
        PersonDomainInfo(
            display_name="Example Data Custodian",
            email="custodian@example.org",
            first_name="Example",
            last_name="Custodian",
            ethics_approved=True,
        ),
        "admin",
    )
    persons: dict[str, str] = {}
    for username, email in users.items():
        first, _, last = NAMES.get(username, f"{username.title()} User").partition(" ")
        person = _create_once(
            entities,
            f"seed:person:{username}",
            ItemSubType.PERSON,
            PersonDomainInfo(
                display_name=f"{first} {last}",
                email=email,
                first_name=first,
                last_name=last,
                ethics_approved=True,
            ),
            _caller(registry, username),
        )
        if registry.linked_person(username) is None:
            with registry.transaction() as db:
                registry.link_person(db, username, person)
        persons[username] = person
    reviewers = registry.list_reviewers()
    if "admin" in reviewers:  # older seeds named the reviewer by username
        registry.remove_reviewer("admin")
    if persons["admin"] not in reviewers:
        registry.add_reviewer(persons["admin"])

    admin = _caller(registry, "admin")
    model = _create_once(
        entities,
        "seed:model",
        ItemSubType.MODEL,
        ModelDomainInfo(
            display_name="provenafs run",
            name="provenafs run",
            description="Any command run with provenafs run; inputs and outputs are observed.",
            documentation_url="https://github.com/provena/provena",
            source_url="https://github.com/provena/provena",
        ),
        admin,
    )
    templates = {
        side: _create_once(
            entities,
            f"seed:dataset-template:{side}",
            ItemSubType.DATASET_TEMPLATE,
            DatasetTemplateDomainInfo(
                display_name=f"any {side}", description=f"Any dataset a run {side}s."
            ),
            admin,
        )
        for side in ("input", "output")
    }
    workflow = _create_once(
        entities,
        "seed:workflow-template",
        ItemSubType.MODEL_RUN_WORKFLOW_TEMPLATE,
        ModelRunWorkflowTemplateDomainInfo.model_validate(
            {
                "display_name": "provenafs run",
                "software_id": model,
                "input_templates": [{"template_id": templates["input"], "optional": True}],
                "output_templates": [{"template_id": templates["output"], "optional": True}],
                "annotations": {"required": [], "optional": []},
            }
        ),
        admin,
    )
    return {
        "persons": persons,
        "organisation": organisation_id,
        "model": model,
        "dataset_templates": templates,
        "workflow_template": workflow,
    }
