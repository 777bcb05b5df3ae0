"""The prov API's check of a model run record, as ``validate_model_run_record`` does it.

Every id the record names is fetched from the registry as the caller sees it (a dataset the
caller cannot read makes the registry answer 401, which the prov API relays); the workflow
template and its dataset templates must exist and be complete, every non-optional template must
be fulfilled by at least one dataset, each dataset's ``resources`` keys must match the template's
deferred resources (only required ones may not be missing), the model, modeller and organisation
must be of their types, and only missing *required* annotations fail. Error texts, their order
and their stacked full stops are Provena's (``prov-api/helpers/validate_model_run_record.py``).

This module must not import from the mount side.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provenafs.server.datastore import Caller, DataStoreError
from provenafs.server.entities import ROUTE_BY_SUBTYPE, EntityRegistry, ItemRoute
from provenafs.server.registry_models import ItemSubType, ModelRunRecord, TemplatedDataset

__all__ = ["Invalid", "RunValidator"]


class Invalid(Exception):
    """A record the prov API refuses: ``str(exc)`` is ``validate_model_run_record``'s error."""


class RunValidator:
    """Checks model run records against the registry, as a given caller sees it."""

    def __init__(self, entities: EntityRegistry) -> None:
        self.entities = entities

    def lookup(self, subtype: ItemSubType, item_id: str, caller: Caller) -> dict[str, Any] | str:
        """``validate_by_id``: the item, an error string, or the registry's HTTP refusal."""
        route: ItemRoute = ROUTE_BY_SUBTYPE[subtype]
        try:
            outcome = self.entities.fetch(route, item_id, caller)
        except DataStoreError as refused:
            if refused.status == 401:
                raise DataStoreError(
                    401,
                    f"Registry API denied access to resource: 401. Error: {refused.detail}",
                ) from None
            raise DataStoreError(
                500,
                f"Registry API responded with non 200 code: {refused.status}."
                f" Error: {refused.detail}",
            ) from None
        if outcome.success and outcome.item is not None:
            return outcome.item
        return f"Failed to retrieve item with details: {outcome.details}."

    def _dataset_problem(
        self, dataset: TemplatedDataset, template: Mapping[str, Any], caller: Caller
    ) -> str | None:
        """``validate_datastore_resource``."""
        found = self.lookup(ItemSubType.DATASET, dataset.dataset_id, caller)
        if isinstance(found, str):
            return f"Input dataset with id {dataset.dataset_id} was not a valid id, error: {found}"
        deferred = template.get("deferred_resources") or []
        mandatory = {r["key"] for r in deferred if not r.get("optional")}
        valid = {r["key"] for r in deferred}
        provided = set(dataset.resources or {})
        where = (
            f"The provided dataset template with id {dataset.dataset_template_id} "
            f"and dataset id {dataset.dataset_id} "
        )
        if mandatory - provided:
            return (
                f"{where}was missing deferred resource paths for the following required resource"
                f" keys ({','.join(sorted(mandatory - provided))})."
            )
        if provided - valid:
            return (
                f"{where}provided unexpected deferred resource paths for the following unexpected"
                f" resource keys ({','.join(sorted(provided - valid))})."
            )
        return None

    def validate(self, record: ModelRunRecord, caller: Caller) -> dict[str, Any]:
        """``validate_model_run_record``; returns the workflow template, raises :class:`Invalid`
        (or the registry's refusal as a :class:`DataStoreError`)."""
        if record.study_id is not None:
            study = self.lookup(ItemSubType.STUDY, record.study_id, caller)
            if isinstance(study, str):
                raise Invalid(
                    f"Provided model run workflow definition with id {record.study_id} was not a"
                    f" valid id, error: {study}"
                )
        workflow = self.lookup(
            ItemSubType.MODEL_RUN_WORKFLOW_TEMPLATE, record.workflow_template_id, caller
        )
        if isinstance(workflow, str):
            raise Invalid(
                "Provided model run workflow definition with id"
                f" {record.workflow_template_id} was not a valid id, error: {workflow}"
            )
        input_templates = workflow["input_templates"]
        output_templates = workflow["output_templates"]
        resolved: dict[str, dict[str, Any]] = {}
        for template_resource in [*input_templates, *output_templates]:
            template_id = template_resource["template_id"]
            template = self.lookup(ItemSubType.DATASET_TEMPLATE, template_id, caller)
            if isinstance(template, str):
                raise Invalid(
                    f"Provided dataset template with id {template_id} (associated with the"
                    f" workflow def.) was not a valid id, error: {template}"
                )
            resolved[template_id] = template
        for side, templates, given in (
            ("inputs", input_templates, record.inputs),
            ("outputs", output_templates, record.outputs),
        ):
            provided = {dataset.dataset_template_id for dataset in given}
            for template_resource in templates:
                if template_resource.get("optional"):
                    continue
                if template_resource["template_id"] not in provided:
                    raise Invalid(
                        "The workflow definition expects dataset with template ID"
                        f" {template_resource['template_id']} but it was not present in the"
                        f" {side}."
                    )
        for side, given in (("input", record.inputs), ("output", record.outputs)):
            for dataset in given:
                dataset_template = resolved.get(dataset.dataset_template_id)
                if dataset_template is None:
                    raise DataStoreError(
                        400,
                        f"An {side} template in the payload (id: {dataset.dataset_template_id})"
                        " does not exist in the workflow definition's list of expected/required"
                        f" {side} dataset templates. Check your workflow definition and provided"
                        f" {side} dataset templates are correct.",
                    )
                problem = self._dataset_problem(dataset, dataset_template, caller)
                if problem is not None:
                    raise Invalid(
                        f"An {side} dataset validation process failed, type"
                        f" {dataset.dataset_type.value}, template id {dataset.dataset_template_id},"
                        f" reason {problem}."
                    )
        software_id = workflow["software_id"]
        model = self.lookup(ItemSubType.MODEL, software_id, caller)
        if isinstance(model, str):
            raise Invalid(
                f"Model with id {software_id} (associated with workflow definition) was not a"
                f" valid model, error: {model}."
            )
        modeller = record.associations.modeller_id
        person = self.lookup(ItemSubType.PERSON, modeller, caller)
        if isinstance(person, str):
            raise Invalid(f"Modeller with id {modeller} was not a valid person, error: {person}.")
        organisation_id = record.associations.requesting_organisation_id
        if organisation_id:
            organisation = self.lookup(ItemSubType.ORGANISATION, organisation_id, caller)
            if isinstance(organisation, str):
                raise Invalid(
                    f"Organisation with id {organisation_id} was not a valid organisation,"
                    f" error: {organisation}."
                )
        annotations = workflow.get("annotations")
        if annotations is not None:
            missing = set(annotations["required"]) - set(record.annotations or {})
            if missing:
                raise Invalid(
                    f"Missing required annotations with keys: ({','.join(sorted(missing))})."
                )
        return workflow
