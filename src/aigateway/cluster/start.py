"""Starting the node agent in the main process, when ``REDIS_URL`` is set."""

from __future__ import annotations

import logging
from typing import Any

from aigateway import shm
from aigateway.cluster.agent import AgentThread, NodeAgent
from aigateway.cluster.deadlines import CircuitDeadlines, DeadlineSync, PauseDeadlines
from aigateway.cluster.figures import node_figures
from aigateway.cluster.node_state import (
    NodeReader,
    circuit_board,
    live_settings,
    pause_clocks,
    rate_mover,
)
from aigateway.cluster.settings import SettingsSync
from aigateway.cluster.state import LAYOUTS, REGION_NAME, ClusterState
from aigateway.cluster.sync import Sync
from aigateway.config import Settings, mask_url

__all__ = ("cluster_region", "node_syncs", "start_agent")

logger = logging.getLogger("aigateway.cluster")


def cluster_region() -> shm.RegionSpec:
    """The cluster region of the node's segment (there, Redis or not: ``off`` without)."""
    return shm.RegionSpec(REGION_NAME, ClusterState.SIZE, {}, LAYOUTS)


def node_syncs(settings: Settings, segment: shm.Segment) -> list[Sync]:
    """What the node shares besides membership, each a sync of the agent over the node's
    segment (leases of provider limits, pauses and health, live settings, the cache)."""
    names = [p.name for p in settings.providers]
    clocks = pause_clocks(segment, names)
    syncs: list[Sync] = [DeadlineSync("pause", list(clocks), PauseDeadlines(clocks))]
    board = circuit_board(settings, segment)
    if board is not None:
        syncs.append(DeadlineSync("circuit", board.providers, CircuitDeadlines(board)))
    live = live_settings(settings, segment)
    if live is not None:
        syncs.append(SettingsSync(live, rate_mover(segment)))
    return syncs


def start_agent(settings: Settings, segment: shm.Segment) -> AgentThread | None:
    """The node agent, running (``None`` without ``REDIS_URL``)."""
    if settings.redis_url is None:
        return None
    state = ClusterState(segment.region(REGION_NAME, *LAYOUTS))
    reader = NodeReader(settings, segment)

    def figures() -> dict[str, Any]:
        return node_figures(*reader.read())

    agent = NodeAgent(settings, state, figures=figures)
    for sync in node_syncs(settings, segment):
        agent.add(sync)
    agent.closing.append(reader.close)
    logger.info(
        "joining cluster %r as node %r through %s",
        settings.cluster_name,
        agent.node_id,
        mask_url(settings.redis_url),
    )
    thread = AgentThread(agent)
    thread.start()
    return thread
