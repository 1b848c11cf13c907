"""Starting the node agent in the main process, when ``REDIS_URL`` is set."""

from __future__ import annotations

import logging
from typing import Any

from aigateway import shm
from aigateway.cluster.agent import AgentThread, NodeAgent
from aigateway.cluster.cache_sync import CacheGeneration
from aigateway.cluster.dead_workers import DeadWorkers
from aigateway.cluster.deadlines import CircuitDeadlines, DeadlineSync, PauseDeadlines
from aigateway.cluster.figures import node_figures
from aigateway.cluster.key_leases import KeyLeases
from aigateway.cluster.key_sync import key_sync
from aigateway.cluster.lease_board import REGION_NAME as LEASE_REGION
from aigateway.cluster.lease_board import LeaseBoard
from aigateway.cluster.leases import LeaseSync, token_lease
from aigateway.cluster.node_state import NodeReader, circuit_board, live_settings, pause_clocks
from aigateway.cluster.settings import SettingsSync
from aigateway.cluster.signature_sync import SignatureSync
from aigateway.cluster.state import LAYOUTS, REGION_NAME, ClusterState
from aigateway.cluster.sync import Sync
from aigateway.config import Settings, mask_url
from aigateway.core.admission import NodeCounters
from aigateway.core.token_budget import token_bucket_name
from aigateway.hotpath import SharedStats
from aigateway.keys.service import KEYS_REGION
from aigateway.keys.slots import HEAD, SLOT, KeySlots
from aigateway.operations import LIVE_REGION
from aigateway.runtime import apply_overrides, read_overrides

__all__ = ("cluster_region", "lease_region", "lease_sync", "node_syncs", "start_agent")

logger = logging.getLogger("aigateway.cluster")


def cluster_region() -> shm.RegionSpec:
    """The cluster region of the node's segment (there, Redis or not: ``off`` without)."""
    return shm.RegionSpec(REGION_NAME, ClusterState.SIZE, {}, LAYOUTS)


def lease_region(settings: Settings) -> shm.RegionSpec:
    """The node's leases of the providers' cluster-wide limits (``lease_board``): a row
    per provider's rate, then one per provider's tokens (``token_lease``)."""
    providers = _lease_names(settings)
    return shm.RegionSpec(
        LEASE_REGION, LeaseBoard.size(len(providers)), {"providers": providers}, LeaseBoard.LAYOUTS
    )


def node_syncs(settings: Settings, segment: shm.Segment, reader: NodeReader) -> list[Sync]:
    """What the node shares besides membership, each a sync of the agent over the node's
    segment (leases of provider limits, pauses and health, live settings, the cache)."""
    names = [p.name for p in settings.providers]
    clocks = pause_clocks(segment, names)
    syncs: list[Sync] = [
        lease_sync(settings, segment, reader.stats),
        DeadlineSync("pause", list(clocks), PauseDeadlines(clocks)),
    ]
    board = circuit_board(settings, segment)
    if board is not None:
        syncs.append(DeadlineSync("circuit", board.providers, CircuitDeadlines(board)))
    live = live_settings(settings, segment)
    if live is not None:
        syncs.append(SettingsSync(live))  # the lease sync follows the live limits
    if settings.cache_enabled and settings.cache_path is not None:
        syncs.append(CacheGeneration(reader.store))  # DELETE /admin/cache anywhere
        syncs.append(DeadWorkers(settings, reader.store))  # a dead leader's claims
    if settings.signatures_path is not None:
        syncs.append(SignatureSync(settings.signatures_path))  # Gemini's, from other nodes
    keys = key_sync(settings, segment)  # tenant keys and their spend, from other nodes
    if keys is not None:
        syncs.append(keys)
    return syncs


def lease_sync(settings: Settings, segment: shm.Segment, stats: SharedStats) -> LeaseSync:
    """Leases of each provider's limit into its bucket (and of its TPM into its token
    bucket), following the live limits (the live-settings region) and the node's demand
    (the admission counters)."""
    names = tuple(p.name for p in settings.providers)
    board = LeaseBoard(segment.region(LEASE_REGION, *LeaseBoard.LAYOUTS), _lease_names(settings))
    counters = NodeCounters(stats, names)
    cluster = ClusterState(segment.region(REGION_NAME, *LAYOUTS))
    live = segment.region(LIVE_REGION)
    slots = segment.region_params(LIVE_REGION)["slots"]
    version, rates = -1, _limits(settings)

    def limits() -> dict[str, float]:
        nonlocal version, rates
        read = read_overrides(live, slots)
        if read is not None and read[0] != version:
            version = read[0]
            rates = _limits(apply_overrides(settings, read[1]))
        return rates

    def release() -> None:
        live.release()
        cluster.close()

    def demand() -> dict[str, tuple[int, int]]:
        report = {name: counters.report(name) for name in names}
        requests = {
            name: (sum(row["admitted"].values()), sum(row["depth"].values()))
            for name, row in report.items()
        }
        return requests | {token_lease(name): counters.token_demand(name) for name in names}

    keys = key_leases(settings, segment)
    buckets = {name: segment.bucket(name) for name in names}
    buckets |= {token_lease(name): segment.bucket(token_bucket_name(name)) for name in names}
    return LeaseSync(
        buckets,
        board,
        limits=limits,
        demand=demand,
        nodes=lambda: cluster.read().nodes,
        fail_open=settings.redis_limits_on_failure == "open",
        on_close=release,
        tokens=[token_lease(name) for name in names],
        keys=keys,
    )


def key_leases(settings: Settings, segment: shm.Segment) -> KeyLeases | None:
    """The tenant keys' rates, leased beside the providers' (None: no key slots or data
    directory, a gateway made in-process). From now on the node's workers leave the
    keys' rate buckets to the agent."""
    if settings.data_dir is None or KEYS_REGION not in segment.region_names:
        return None
    slots = KeySlots(segment.region(KEYS_REGION, HEAD, SLOT), segment.region_lock_path(KEYS_REGION))
    slots.lease_from_cluster()
    return KeyLeases(settings.data_dir, slots)


def _lease_names(settings: Settings) -> list[str]:
    names = [p.name for p in settings.providers]
    return names + [token_lease(name) for name in names]


def _limits(settings: Settings) -> dict[str, float]:
    """Each provider's rate, and its tokens a second (``<PROVIDER>_TPM`` / 60, 0: none)."""
    rates = {p.name: p.rps for p in settings.providers}
    return rates | {token_lease(p.name): p.tpm / 60.0 for p in settings.providers}


def start_agent(settings: Settings, segment: shm.Segment) -> AgentThread | None:
    """The node agent, running (``None`` without ``REDIS_URL``)."""
    if settings.redis_url is None:
        return None
    state = ClusterState(segment.region(REGION_NAME, *LAYOUTS))
    reader = NodeReader(settings, segment)

    def figures() -> dict[str, Any]:
        return node_figures(*reader.read())

    agent = NodeAgent(settings, state, figures=figures)
    for sync in node_syncs(settings, segment, reader):
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
