"""The provenance graph of the local store: what Provena keeps in Neo4j, kept in SQLite.

Records lodge graphs as Provena's prov API builds them (``prov_helpers.py``: a model run, a
Create activity, a Version activity): nodes carry ``item_category`` and ``item_subtype`` (the last
lodge wins, as Neo4j's ``MERGE … SET`` does), links carry the PROV relation and the id of the
record that lodged them, so updating a model run replaces exactly its own links.

Lineage answers the six ``/explore`` queries in networkx ``node_link_data(g, edges="links")``
shape, with Neo4j's semantics: every node and link on a directed path of 1..depth links from the
start (upstream: along links; downstream: against them); the special queries keep only paths
that end at a DATASET entity or an AGENT; ``effected_agents`` is Provena's ``(agent) <-[]-
(downstream) -[*0..depth]-> (start)``. Only one link per node pair is reported (the first one
lodged), as the networkx digraph keeps one. Paths are found with breadth-first distances rather
than by enumerating Neo4j's relationship-unique paths; both agree on acyclic graphs (a run that
lists a dataset as input and output makes a cycle, where this may report a few more links).

It must not check permissions (lineage runs with a service account) nor import from the mount.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from provenafs.server.registry import Registry
from provenafs.server.registry_models import ItemCategory, ItemSubType, ModelRunRecord

__all__ = [
    "Graph",
    "LineageQuery",
    "Link",
    "Node",
    "ProvGraph",
    "create_to_graph",
    "model_run_to_graph",
    "version_to_graph",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prov_nodes (
    id TEXT PRIMARY KEY, item_category TEXT NOT NULL, item_subtype TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS prov_links (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL, target TEXT NOT NULL, type TEXT NOT NULL, record_id TEXT NOT NULL,
    UNIQUE (source, target, type, record_id)
);
CREATE INDEX IF NOT EXISTS prov_links_by_source ON prov_links (source);
CREATE INDEX IF NOT EXISTS prov_links_by_target ON prov_links (target);
CREATE INDEX IF NOT EXISTS prov_links_by_record ON prov_links (record_id);
"""

USED = "used"
WAS_GENERATED_BY = "wasGeneratedBy"
WAS_ATTRIBUTED_TO = "wasAttributedTo"
WAS_ASSOCIATED_WITH = "wasAssociatedWith"
WAS_INFORMED_BY = "wasInformedBy"
HAD_MEMBER = "hadMember"
WAS_INFLUENCED_BY = "wasInfluencedBy"

# PROV-JSON record type and the attribute names of its two ends, per relation
_PROV_JSON: dict[str, tuple[str, str]] = {
    USED: ("prov:activity", "prov:entity"),
    WAS_GENERATED_BY: ("prov:entity", "prov:activity"),
    WAS_ATTRIBUTED_TO: ("prov:entity", "prov:agent"),
    WAS_ASSOCIATED_WITH: ("prov:activity", "prov:agent"),
    WAS_INFORMED_BY: ("prov:informed", "prov:informant"),
    HAD_MEMBER: ("prov:collection", "prov:entity"),
    WAS_INFLUENCED_BY: ("prov:influencee", "prov:influencer"),
}
_PROV_ELEMENT = {
    ItemCategory.ENTITY: "entity",
    ItemCategory.ACTIVITY: "activity",
    ItemCategory.AGENT: "agent",
}


@dataclasses.dataclass(frozen=True)
class Node:
    id: str
    category: ItemCategory
    subtype: ItemSubType


@dataclasses.dataclass(frozen=True)
class Link:
    source: str
    target: str
    type: str


@dataclasses.dataclass(frozen=True)
class Graph:
    """One record's graph (Provena's ``NodeGraph``): nodes by id and one link per pair."""

    record_id: str
    nodes: Mapping[str, Node]
    links: tuple[Link, ...]

    def prov_json(self) -> str:
        """The PROV-JSON document Provena stores as ``prov_serialisation`` (python-prov's
        ``serialize(format="json")`` of ``NodeGraph.to_prov_document()``)."""
        document: dict[str, Any] = {"prefix": {"default": "http://hdl.handle.net/"}}
        for node in self.nodes.values():
            document.setdefault(_PROV_ELEMENT[node.category], {})[node.id] = {
                "id": node.id,
                "item_category": node.category.value,
                "item_subtype": node.subtype.value,
            }
        for number, link in enumerate(self.links, start=1):
            first, second = _PROV_JSON[link.type]
            document.setdefault(link.type, {})[f"_:id{number}"] = {
                first: link.source,
                second: link.target,
            }
        return json.dumps(document)


class _Builder:
    """Provena's ``GraphBuilder``: nodes replace by id, links by (source, target)."""

    def __init__(self, record_id: str) -> None:
        self.record_id = record_id
        self.nodes: dict[str, Node] = {}
        self.links: dict[tuple[str, str], Link] = {}

    def node(self, item_id: str, category: ItemCategory, subtype: ItemSubType) -> None:
        self.nodes[item_id] = Node(item_id, category, subtype)

    def link(self, source: str, target: str, relation: str) -> None:
        self.links[(source, target)] = Link(source, target, relation)

    def build(self) -> Graph:
        return Graph(self.record_id, dict(self.nodes), tuple(self.links.values()))


def model_run_to_graph(record: ModelRunRecord, record_id: str, model_id: str) -> Graph:
    """``prov_helpers.model_run_to_graph``; *model_id* is the workflow template's software."""
    graph = _Builder(record_id)
    graph.node(record_id, ItemCategory.ACTIVITY, ItemSubType.MODEL_RUN)
    if record.study_id is not None:
        graph.node(record.study_id, ItemCategory.ACTIVITY, ItemSubType.STUDY)
    inputs: dict[str, list[str]] = {}
    outputs: dict[str, list[str]] = {}
    for templated, by_template in ((record.inputs, inputs), (record.outputs, outputs)):
        for dataset in templated:
            graph.node(dataset.dataset_id, ItemCategory.ENTITY, ItemSubType.DATASET)
            by_template.setdefault(dataset.dataset_template_id, []).append(dataset.dataset_id)
    template_id = record.workflow_template_id
    # Provena lodges the workflow template node with subtype WORKFLOW_TEMPLATE
    graph.node(template_id, ItemCategory.ENTITY, ItemSubType.WORKFLOW_TEMPLATE)
    dataset_templates = list(dict.fromkeys([*inputs, *outputs]))
    for dataset_template in dataset_templates:
        graph.node(dataset_template, ItemCategory.ENTITY, ItemSubType.DATASET_TEMPLATE)
    graph.node(model_id, ItemCategory.ENTITY, ItemSubType.MODEL)
    modeller = record.associations.modeller_id
    graph.node(modeller, ItemCategory.AGENT, ItemSubType.PERSON)
    organisation = record.associations.requesting_organisation_id
    if organisation is not None:
        graph.node(organisation, ItemCategory.AGENT, ItemSubType.ORGANISATION)

    if record.study_id is not None:
        graph.link(record_id, record.study_id, WAS_INFORMED_BY)
    for dataset_ids in inputs.values():
        for dataset_id in dataset_ids:
            graph.link(record_id, dataset_id, USED)
    for dataset_ids in outputs.values():
        for dataset_id in dataset_ids:
            graph.link(dataset_id, record_id, WAS_GENERATED_BY)
    graph.link(record_id, model_id, USED)
    graph.link(record_id, template_id, USED)
    graph.link(record_id, modeller, WAS_ASSOCIATED_WITH)
    if organisation is not None:
        graph.link(record_id, organisation, WAS_ASSOCIATED_WITH)
    for dataset_ids in outputs.values():
        for dataset_id in dataset_ids:
            graph.link(dataset_id, modeller, WAS_ATTRIBUTED_TO)
    for dataset_template in dataset_templates:
        graph.link(template_id, dataset_template, HAD_MEMBER)
        for dataset_id in [*inputs.get(dataset_template, []), *outputs.get(dataset_template, [])]:
            graph.link(dataset_id, dataset_template, WAS_INFLUENCED_BY)
    graph.link(template_id, model_id, HAD_MEMBER)
    return graph.build()


def create_to_graph(
    created_item_id: str, created_subtype: ItemSubType, activity_id: str, agent_id: str
) -> Graph:
    """``prov_helpers.create_to_graph``: a Create activity generating an entity."""
    graph = _Builder(activity_id)
    graph.node(activity_id, ItemCategory.ACTIVITY, ItemSubType.CREATE)
    graph.node(agent_id, ItemCategory.AGENT, ItemSubType.PERSON)
    graph.node(created_item_id, ItemCategory.ENTITY, created_subtype)
    graph.link(created_item_id, activity_id, WAS_GENERATED_BY)
    graph.link(activity_id, agent_id, WAS_ASSOCIATED_WITH)
    graph.link(created_item_id, agent_id, WAS_ATTRIBUTED_TO)
    return graph.build()


def version_to_graph(
    from_id: str, to_id: str, activity_id: str, subtype: ItemSubType, agent_id: str
) -> Graph:
    """``prov_helpers.version_to_graph``: the new version ``wasGeneratedBy`` a Version activity
    that ``used`` the old version."""
    graph = _Builder(activity_id)
    graph.node(activity_id, ItemCategory.ACTIVITY, ItemSubType.VERSION)
    graph.node(agent_id, ItemCategory.AGENT, ItemSubType.PERSON)
    graph.node(from_id, ItemCategory.ENTITY, subtype)
    graph.node(to_id, ItemCategory.ENTITY, subtype)
    graph.link(to_id, activity_id, WAS_GENERATED_BY)
    graph.link(activity_id, agent_id, WAS_ASSOCIATED_WITH)
    graph.link(to_id, agent_id, WAS_ATTRIBUTED_TO)
    graph.link(activity_id, from_id, USED)
    return graph.build()


@dataclasses.dataclass(frozen=True)
class LineageQuery:
    """One of the ``/explore`` queries: a direction and which path ends count."""

    downstream: bool  # paths into the start (against the links) rather than out of it
    ends: str  # "any", "dataset", "agent" or "agent-neighbour" (effected agents)


UPSTREAM = LineageQuery(downstream=False, ends="any")
DOWNSTREAM = LineageQuery(downstream=True, ends="any")
CONTRIBUTING_DATASETS = LineageQuery(downstream=False, ends="dataset")
EFFECTED_DATASETS = LineageQuery(downstream=True, ends="dataset")
CONTRIBUTING_AGENTS = LineageQuery(downstream=False, ends="agent")
EFFECTED_AGENTS = LineageQuery(downstream=True, ends="agent-neighbour")


class ProvGraph:
    """The lodged graph (tables ``prov_nodes``, ``prov_links`` in the registry's file)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        with registry.transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    @staticmethod
    def lodge(db: sqlite3.Connection, graph: Graph, *, replace: bool = False) -> None:
        """Merge *graph* in (Provena's ``merge_add_graph_to_db``); *replace* first drops the
        links this record lodged before (the diff an update applies)."""
        if replace:
            db.execute("DELETE FROM prov_links WHERE record_id = ?", (graph.record_id,))
        db.executemany(
            "INSERT INTO prov_nodes (id, item_category, item_subtype) VALUES (?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET item_category = excluded.item_category,"
            " item_subtype = excluded.item_subtype",
            [(n.id, n.category.value, n.subtype.value) for n in graph.nodes.values()],
        )
        db.executemany(
            "INSERT OR IGNORE INTO prov_links (source, target, type, record_id)"
            " VALUES (?, ?, ?, ?)",
            [(link.source, link.target, link.type, graph.record_id) for link in graph.links],
        )

    # ----------------------------------------------------------------- queries

    def explore(self, start: str, depth: int, query: LineageQuery) -> dict[str, Any]:
        """The ``node_link_data`` of every path of *query* from *start* (1..*depth* links)."""
        with self.registry.reading() as db:
            return _Exploration(db, start, depth, query).node_link_data()


class _Exploration:
    """Breadth-first distances over the lodged links, in the query's direction.

    Walking "forward" means along links for upstream queries and against them for downstream
    ones; a link is reported when a path start ~> its near end -> its far end ~> a wanted end
    fits in *depth* links.
    """

    def __init__(self, db: sqlite3.Connection, start: str, depth: int, query: LineageQuery):
        self.db = db
        self.start = start
        self.depth = depth
        self.query = query
        self._pairs: dict[tuple[str, str], str] = {}  # (source, target) -> first relation

    def _steps(self, frontier: Sequence[str]) -> list[tuple[str, str]]:
        """``(near, far)`` pairs one step forward from *frontier*, in lodge order."""
        near, far = ("target", "source") if self.query.downstream else ("source", "target")
        marks = ",".join("?" for _ in frontier)
        rows = self.db.execute(
            f"SELECT source, target, type FROM prov_links WHERE {near} IN ({marks})"  # noqa: S608
            " ORDER BY seq",
            list(frontier),
        ).fetchall()
        steps = []
        for row in rows:
            self._pairs.setdefault((row["source"], row["target"]), row["type"])
            steps.append((row[near], row[far]))
        return steps

    def _nodes(self, ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        wanted = list(dict.fromkeys(ids))
        found: dict[str, tuple[str, str]] = {}
        for chunk in range(0, len(wanted), 500):
            part = wanted[chunk : chunk + 500]
            marks = ",".join("?" for _ in part)
            for row in self.db.execute(
                f"SELECT * FROM prov_nodes WHERE id IN ({marks})",  # noqa: S608
                part,
            ):
                found[row["id"]] = (row["item_category"], row["item_subtype"])
        return found

    def node_link_data(self) -> dict[str, Any]:
        # forward distances from the start over links out of nodes closer than depth
        distance = {self.start: 0}
        steps: list[tuple[str, str]] = []
        frontier = [self.start]
        for level in range(self.depth):
            if not frontier:
                break
            found = self._steps(frontier)
            steps += found
            frontier = []
            for _, far in found:
                if far not in distance:
                    distance[far] = level + 1
                    frontier.append(far)
        steps = list(dict.fromkeys(steps))
        if self.query.ends == "any":
            chosen = self._oriented(steps)
        elif self.query.ends == "agent-neighbour":
            chosen = self._effected_agents(steps, distance)
        else:
            chosen = self._oriented(self._ending_paths(steps, distance))
        return self._serialise(chosen)

    def _oriented(self, steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Walking pairs ``(near, far)`` as lodged links ``(source, target)``."""
        if self.query.downstream:
            return [(far, near) for near, far in steps]
        return steps

    def _ending_paths(
        self, steps: list[tuple[str, str]], distance: Mapping[str, int]
    ) -> list[tuple[str, str]]:
        """Links on paths that end at a DATASET entity (or an AGENT) within depth."""
        attributes = self._nodes(far for _, far in steps)

        def wanted(node: str) -> bool:
            category, subtype = attributes.get(node, ("", ""))
            if self.query.ends == "dataset":
                return category == ItemCategory.ENTITY and subtype == ItemSubType.DATASET
            return category == ItemCategory.AGENT

        return self._on_paths(steps, distance, [n for n in attributes if wanted(n)])

    def _on_paths(
        self, steps: list[tuple[str, str]], distance: Mapping[str, int], ends: Sequence[str]
    ) -> list[tuple[str, str]]:
        remaining = _distances_to(steps, ends)
        return [
            (near, far)
            for near, far in steps
            if far in remaining and distance[near] + 1 + remaining[far] <= self.depth
        ]

    def _effected_agents(
        self, steps: list[tuple[str, str]], distance: Mapping[str, int]
    ) -> list[tuple[str, str]]:
        """``(agent) <-[]- (downstream) -[*0..depth]-> (start)``: the links from nodes within
        depth of the start (against the links) to agents, and the paths from those nodes."""
        reached = list(distance)
        agent_links: list[tuple[str, str]] = []
        for chunk in range(0, len(reached), 500):
            part = reached[chunk : chunk + 500]
            marks = ",".join("?" for _ in part)
            query = (
                "SELECT l.source, l.target, l.type FROM prov_links l JOIN prov_nodes n"  # noqa: S608
                f" ON n.id = l.target WHERE l.source IN ({marks})"
                " AND n.item_category = 'AGENT' ORDER BY l.seq"
            )
            for row in self.db.execute(query, part):
                self._pairs.setdefault((row["source"], row["target"]), row["type"])
                agent_links.append((row["source"], row["target"]))
        sources = list(dict.fromkeys(source for source, _ in agent_links))
        return [*self._oriented(self._on_paths(steps, distance, sources)), *agent_links]

    def _serialise(self, pairs: list[tuple[str, str]]) -> dict[str, Any]:
        """networkx ``node_link_data`` of lodged ``(source, target)`` pairs: nodes in first-seen
        order, one link per pair (its first lodged relation)."""
        attributes = self._nodes(node for pair in pairs for node in pair)
        order: dict[str, None] = {}
        links: dict[tuple[str, str], str] = {}
        for source, target in pairs:
            relation = self._pairs.get((source, target))
            if relation is None or source not in attributes or target not in attributes:
                continue
            order.setdefault(source)
            order.setdefault(target)
            links.setdefault((source, target), relation)
        return {
            "directed": True,
            "multigraph": False,
            "graph": {},
            "nodes": [
                {"item_category": attributes[n][0], "item_subtype": attributes[n][1], "id": n}
                for n in order
            ],
            "links": [
                {"type": relation, "source": source, "target": target}
                for (source, target), relation in links.items()
            ],
        }


def _distances_to(steps: list[tuple[str, str]], ends: Sequence[str]) -> dict[str, int]:
    """Links to walk from each node to the nearest of *ends*, over the explored *steps*."""
    backwards: dict[str, list[str]] = {}
    for near, far in steps:
        backwards.setdefault(far, []).append(near)
    remaining = dict.fromkeys(ends, 0)
    frontier = list(ends)
    while frontier:
        following = []
        for node in frontier:
            for previous in backwards.get(node, []):
                if previous not in remaining:
                    remaining[previous] = remaining[node] + 1
                    following.append(previous)
        frontier = following
    return remaining
