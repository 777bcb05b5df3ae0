"""Provena's other services on the local store's registry: one object wiring them together.

Real Provena runs the registry, prov, job, search and auth APIs as separate services; the local
store answers all of them at its one root (their paths do not collide with the data store's).
``ProvenaServices`` builds them over one :class:`Registry` (their tables live in its SQLite
file), gives the data store its dataset-activity hook, and hands ``create_app`` their routers.
The job runner thread is started and stopped by whoever runs the server.

This module holds no logic of its own and must not import from the mount side.
"""

from __future__ import annotations

from fastapi import APIRouter

from provenafs.server.dataset_access import DatasetAccess, dataset_access_router
from provenafs.server.entities import EntityRegistry, registry_router
from provenafs.server.identity import identity_router
from provenafs.server.jobs import JobRunner, JobStore, jobs_router
from provenafs.server.lineage import ProvGraph
from provenafs.server.prov import Provenance, prov_router
from provenafs.server.registry import Registry
from provenafs.server.search import RegistrySearch, search_router

__all__ = ["ProvenaServices"]


class ProvenaServices:
    """The registry (non-dataset), prov, job, search and auth APIs of one local store."""

    def __init__(self, registry: Registry) -> None:
        self.jobs = JobStore(registry)
        self.entities = EntityRegistry(registry, self.jobs)
        self.dataset_access = DatasetAccess(self.entities)
        self.graph = ProvGraph(registry)
        self.provenance = Provenance(self.entities, self.jobs, self.graph)
        self.search = RegistrySearch(registry)
        self.runner = JobRunner(self.jobs, self.provenance.handlers())

    def routers(self) -> tuple[APIRouter, ...]:
        return (
            registry_router(self.entities, dataset_access_router(self.dataset_access)),
            prov_router(self.provenance),
            jobs_router(self.jobs),
            search_router(self.search),
            identity_router(self.entities),
        )
