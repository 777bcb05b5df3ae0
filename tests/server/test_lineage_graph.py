"""The provenance graph on its own (no HTTP): Provena's graphs and its Neo4j query semantics.

Graphs are lodged into a real registry file in a temporary directory; each test checks exact
node and link sets of the ``node_link_data`` answer, so a change of direction, depth counting
or end filtering fails here first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provenafs.server.lineage import (
    CONTRIBUTING_AGENTS,
    CONTRIBUTING_DATASETS,
    DOWNSTREAM,
    EFFECTED_AGENTS,
    EFFECTED_DATASETS,
    UPSTREAM,
    ProvGraph,
    model_run_to_graph,
    version_to_graph,
)
from provenafs.server.registry import Registry
from provenafs.server.registry_models import ItemSubType, ModelRunRecord

RUN, MODEL, WORKFLOW, IN_T, OUT_T = "run/1", "model/1", "wf/1", "tpl/in", "tpl/out"
D_IN, D_OUT, PERSON, ORG = "ds/in", "ds/out", "person/1", "org/1"


def record(inputs: list[str], outputs: list[str], **extra: Any) -> ModelRunRecord:
    return ModelRunRecord.model_validate(
        {
            "workflow_template_id": WORKFLOW,
            "inputs": [
                {"dataset_template_id": IN_T, "dataset_id": d, "dataset_type": "DATA_STORE"}
                for d in inputs
            ],
            "outputs": [
                {"dataset_template_id": OUT_T, "dataset_id": d, "dataset_type": "DATA_STORE"}
                for d in outputs
            ],
            "display_name": "run",
            "description": "a run",
            "associations": {"modeller_id": PERSON, **extra},
            "start_time": 1,
            "end_time": 2,
        }
    )


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[ProvGraph]:
    registry = Registry.in_data_dir(tmp_path)
    yield ProvGraph(registry)
    registry.close()


def lodge(graph: ProvGraph, *graphs: Any) -> None:
    with graph.registry.transaction() as db:
        for one in graphs:
            graph.lodge(db, one)


def links(answer: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(link["source"], link["target"], link["type"]) for link in answer["links"]}


def node_ids(answer: dict[str, Any]) -> set[str]:
    return {node["id"] for node in answer["nodes"]}


def test_model_run_graph_is_provenas(graph: ProvGraph) -> None:
    built = model_run_to_graph(record([D_IN], [D_OUT], requesting_organisation_id=ORG), RUN, MODEL)
    assert {(link.source, link.target, link.type) for link in built.links} == {
        (RUN, D_IN, "used"),
        (D_OUT, RUN, "wasGeneratedBy"),
        (RUN, MODEL, "used"),
        (RUN, WORKFLOW, "used"),
        (RUN, PERSON, "wasAssociatedWith"),
        (RUN, ORG, "wasAssociatedWith"),
        (D_OUT, PERSON, "wasAttributedTo"),
        (WORKFLOW, IN_T, "hadMember"),
        (WORKFLOW, OUT_T, "hadMember"),
        (D_IN, IN_T, "wasInfluencedBy"),
        (D_OUT, OUT_T, "wasInfluencedBy"),
        (WORKFLOW, MODEL, "hadMember"),
    }
    assert built.nodes[WORKFLOW].subtype == ItemSubType.WORKFLOW_TEMPLATE  # Provena's quirk
    prov = json.loads(built.prov_json())
    assert prov["prefix"] == {"default": "http://hdl.handle.net/"}
    assert prov["activity"][RUN] == {
        "id": RUN,
        "item_category": "ACTIVITY",
        "item_subtype": "MODEL_RUN",
    }
    assert {"prov:activity": RUN, "prov:entity": D_IN} in prov["used"].values()
    assert set(prov["agent"]) == {PERSON, ORG}


def test_upstream_counts_depth_in_links(graph: ProvGraph) -> None:
    lodge(graph, model_run_to_graph(record([D_IN], [D_OUT]), RUN, MODEL))
    one = graph.explore(D_OUT, 1, UPSTREAM)
    assert links(one) == {
        (D_OUT, RUN, "wasGeneratedBy"),
        (D_OUT, PERSON, "wasAttributedTo"),
        (D_OUT, OUT_T, "wasInfluencedBy"),
    }
    assert one["directed"] is True and one["multigraph"] is False and one["graph"] == {}
    assert one["nodes"][0] == {"item_category": "ENTITY", "item_subtype": "DATASET", "id": D_OUT}
    two = graph.explore(D_OUT, 2, UPSTREAM)
    assert (RUN, D_IN, "used") in links(two)
    assert (D_IN, IN_T, "wasInfluencedBy") not in links(two)  # three links away
    assert (D_IN, IN_T, "wasInfluencedBy") in links(graph.explore(D_OUT, 3, UPSTREAM))


def test_downstream_walks_against_the_links(graph: ProvGraph) -> None:
    lodge(graph, model_run_to_graph(record([D_IN], [D_OUT]), RUN, MODEL))
    answer = graph.explore(D_IN, 2, DOWNSTREAM)
    assert links(answer) == {(RUN, D_IN, "used"), (D_OUT, RUN, "wasGeneratedBy")}
    assert graph.explore(D_OUT, 2, DOWNSTREAM) == {
        "directed": True,
        "multigraph": False,
        "graph": {},
        "nodes": [],
        "links": [],
    }


def test_special_dataset_queries_keep_paths_ending_at_datasets(graph: ProvGraph) -> None:
    lodge(
        graph,
        model_run_to_graph(record([D_IN], [D_OUT]), RUN, MODEL),
        version_to_graph("ds/v1", D_IN, "version/1", ItemSubType.DATASET, PERSON),
    )
    contributing = graph.explore(D_OUT, 4, CONTRIBUTING_DATASETS)
    assert links(contributing) == {
        (D_OUT, RUN, "wasGeneratedBy"),
        (RUN, D_IN, "used"),
        (D_IN, "version/1", "wasGeneratedBy"),
        ("version/1", "ds/v1", "used"),
    }
    assert PERSON not in node_ids(contributing) and OUT_T not in node_ids(contributing)
    # the version chain is four links from the output: depth 3 stops at the input
    assert "ds/v1" not in node_ids(graph.explore(D_OUT, 3, CONTRIBUTING_DATASETS))
    effected = graph.explore("ds/v1", 4, EFFECTED_DATASETS)
    assert node_ids(effected) == {"ds/v1", "version/1", D_IN, RUN, D_OUT}


def test_special_agent_queries(graph: ProvGraph) -> None:
    lodge(
        graph,
        model_run_to_graph(record([D_IN], [D_OUT], requesting_organisation_id=ORG), RUN, MODEL),
    )
    contributing = graph.explore(D_OUT, 2, CONTRIBUTING_AGENTS)
    assert links(contributing) == {
        (D_OUT, PERSON, "wasAttributedTo"),
        (D_OUT, RUN, "wasGeneratedBy"),
        (RUN, PERSON, "wasAssociatedWith"),
        (RUN, ORG, "wasAssociatedWith"),
    }
    # (agent) <-[]- (downstream) -[*0..depth]-> (start): agents of whatever derives from D_IN
    effected = graph.explore(D_IN, 1, EFFECTED_AGENTS)
    assert links(effected) == {
        (RUN, D_IN, "used"),
        (RUN, PERSON, "wasAssociatedWith"),
        (RUN, ORG, "wasAssociatedWith"),
    }
    assert (D_OUT, PERSON, "wasAttributedTo") in links(graph.explore(D_IN, 2, EFFECTED_AGENTS))


def test_one_link_per_pair_and_updates_replace_a_records_links(graph: ProvGraph) -> None:
    lodge(graph, model_run_to_graph(record([D_IN], [D_OUT]), RUN, MODEL))
    other = model_run_to_graph(record([D_OUT], [D_IN]), "run/2", MODEL)
    lodge(graph, other)
    answer = graph.explore(D_IN, 1, UPSTREAM)
    pairs = [(link["source"], link["target"]) for link in answer["links"]]
    assert len(pairs) == len(set(pairs))
    with graph.registry.transaction() as db:
        graph.lodge(db, model_run_to_graph(record(["ds/other"], [D_OUT]), RUN, MODEL), replace=True)
    assert links(graph.explore(RUN, 1, UPSTREAM)) >= {(RUN, "ds/other", "used")}
    assert (RUN, D_IN, "used") not in links(graph.explore(RUN, 1, UPSTREAM))
    assert (RUN, D_IN, "used") not in links(graph.explore(D_IN, 1, DOWNSTREAM))
