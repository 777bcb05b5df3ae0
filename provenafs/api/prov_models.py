"""Frozen records of Provena's prov, job and registry entity APIs, as the mount uses them.

``ModelRunRecord`` is what ``POST /model_run/register`` takes (docs/API.md §14) and knows its
wire form (``to_json``); ``LineageGraph`` is a ``LineageResponse`` graph (§15) and renders the
networkx ``node_link_data`` shape again (``to_json``); ``JobState`` is one row of the job table
(§16). Values only: parsing happens in ``api.provenance``; registry items are
``api.models.RegistryItem``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = [
    "JobState",
    "LineageGraph",
    "LineageLink",
    "LineageNode",
    "ModelRunRecord",
    "TemplatedDataset",
    "WorkflowTemplate",
]


@dataclasses.dataclass(frozen=True)
class LineageNode:
    id: str
    category: str  # ENTITY, ACTIVITY, AGENT
    subtype: str  # DATASET, MODEL_RUN, VERSION, PERSON, ...


@dataclasses.dataclass(frozen=True)
class LineageLink:
    source: str
    target: str
    type: str  # a PROV relation: used, wasGeneratedBy, ...


@dataclasses.dataclass(frozen=True)
class LineageGraph:
    """A lineage answer's graph: every node on a path from the start, and the edges between."""

    nodes: tuple[LineageNode, ...]
    links: tuple[LineageLink, ...]

    def only(self, keep: frozenset[str]) -> LineageGraph:
        """The graph without the nodes not in *keep* (and every edge touching them)."""
        return LineageGraph(
            tuple(n for n in self.nodes if n.id in keep),
            tuple(e for e in self.links if e.source in keep and e.target in keep),
        )

    def to_json(self) -> dict[str, Any]:
        """The networkx ``node_link_data`` shape the prov API answers."""
        return {
            "directed": True,
            "multigraph": False,
            "graph": {},
            "nodes": [
                {"id": n.id, "item_category": n.category, "item_subtype": n.subtype}
                for n in self.nodes
            ],
            "links": [{"source": e.source, "target": e.target, "type": e.type} for e in self.links],
        }


@dataclasses.dataclass(frozen=True)
class JobState:
    """One job of the job API, as far as the mount reads it."""

    session_id: str
    status: str  # PENDING, DEQUEUED, IN_PROGRESS, SUCCEEDED, FAILED
    job_sub_type: str
    created_timestamp: int
    info: str | None
    result_id: str | None  # a lodge's new item handle (``result.record.id``)
    run_id: str | None  # the ``provenafs.run_id`` annotation of a lodged record

    @property
    def finished(self) -> bool:
        return self.status in {"SUCCEEDED", "FAILED"}


@dataclasses.dataclass(frozen=True)
class WorkflowTemplate:
    """The parts of a MODEL_RUN_WORKFLOW_TEMPLATE a run record needs."""

    id: str
    input_template_ids: tuple[str, ...]
    output_template_ids: tuple[str, ...]
    required_annotations: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TemplatedDataset:
    template_id: str
    dataset_id: str


@dataclasses.dataclass(frozen=True)
class ModelRunRecord:
    """A ``ModelRunRecord`` (docs/API.md §14) for a data store dataset's inputs and outputs."""

    workflow_template_id: str
    model_version: str | None
    inputs: tuple[TemplatedDataset, ...]
    outputs: tuple[TemplatedDataset, ...]
    annotations: Mapping[str, str]
    display_name: str
    description: str
    modeller_id: str
    start_time: int
    end_time: int
    study_id: str | None = None
    organisation_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        def datasets(items: tuple[TemplatedDataset, ...]) -> list[dict[str, Any]]:
            return [
                {
                    "dataset_template_id": d.template_id,
                    "dataset_id": d.dataset_id,
                    "dataset_type": "DATA_STORE",
                    "resources": None,
                }
                for d in items
            ]

        return {
            "workflow_template_id": self.workflow_template_id,
            "model_version": self.model_version,
            "inputs": datasets(self.inputs),
            "outputs": datasets(self.outputs),
            "annotations": dict(self.annotations),
            "display_name": self.display_name,
            "description": self.description,
            "study_id": self.study_id,
            "associations": {
                "modeller_id": self.modeller_id,
                "requesting_organisation_id": self.organisation_id,
            },
            "start_time": self.start_time,
            "end_time": self.end_time,
        }
