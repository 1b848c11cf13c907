"""Starting the node agent in the main process, when ``REDIS_URL`` is set."""

from __future__ import annotations

import logging
from typing import Any

from aigateway import shm
from aigateway.cluster.agent import AgentThread, NodeAgent
from aigateway.cluster.cache_sync import CacheGeneration, node_store
from aigateway.cluster.state import LAYOUTS, REGION_NAME, ClusterState
from aigateway.cluster.sync import Sync
from aigateway.config import Settings, mask_url
from aigateway.stats.registry import METRICS

__all__ = ("cluster_region", "node_syncs", "start_agent")

logger = logging.getLogger("aigateway.cluster")


def cluster_region() -> shm.RegionSpec:
    """The cluster region of the node's segment (there, Redis or not: ``off`` without)."""
    return shm.RegionSpec(REGION_NAME, ClusterState.SIZE, {}, LAYOUTS)


def node_syncs(settings: Settings, segment: shm.Segment) -> list[Sync]:
    """What the node shares besides membership, each a sync of the agent over the node's
    segment (leases of provider limits, pauses and health, live settings, the cache)."""
    syncs: list[Sync] = []
    if settings.cache_enabled and settings.cache_path is not None:
        syncs.append(CacheGeneration(node_store(settings)))  # DELETE /admin/cache anywhere
    return syncs


def start_agent(settings: Settings, segment: shm.Segment) -> AgentThread | None:
    """The node agent, running (``None`` without ``REDIS_URL``)."""
    if settings.redis_url is None:
        return None
    state = ClusterState(segment.region(REGION_NAME, *LAYOUTS))
    stats = segment.stats()
    answered = METRICS["requests_answered"].stored_as
    in_flight = METRICS["requests_in_flight"].stored_as

    def figures() -> dict[str, Any]:
        snapshot = stats.snapshot()
        return {
            "requests": snapshot.counters.get(answered, 0),
            "in_flight": snapshot.gauges.get(in_flight, 0),
        }

    agent = NodeAgent(settings, state, figures=figures)
    for sync in node_syncs(settings, segment):
        agent.add(sync)
    logger.info(
        "joining cluster %r as node %r through %s",
        settings.cluster_name,
        agent.node_id,
        mask_url(settings.redis_url),
    )
    thread = AgentThread(agent)
    thread.start()
    return thread
