"""What the workers of one node share in memory: the layout of the node's segment.

One rate bucket per provider (``<PROVIDER>_RPS``), one pause clock per provider (a
provider's 429 pauses it for every worker), one token bucket per provider
(``<PROVIDER>_TPM``), the tenant keys' slots, the stats every worker adds to (as the
metric registry, ``aigateway.stats.registry``, declares them for the configured
providers), and the regions of operations (labelled metrics, health, live settings).
"""

from __future__ import annotations

from aigateway import shm
from aigateway.cluster.start import cluster_region, lease_region
from aigateway.config import Settings
from aigateway.core.admission import pause_bucket_name, pause_bucket_spec
from aigateway.core.token_budget import token_bucket_name, token_bucket_spec
from aigateway.keys.service import region_spec as keys_region
from aigateway.operations import node_regions


def node_layout(settings: Settings) -> shm.NodeLayout:
    base = shm.node_layout(settings)
    rate, burst = pause_bucket_spec()
    pauses = tuple(
        shm.BucketSpec(pause_bucket_name(p.name), rate, burst) for p in settings.providers
    )
    tokens = tuple(  # <PROVIDER>_TPM: in every layout, so it can be set live
        shm.BucketSpec(token_bucket_name(p.name), *token_bucket_spec(p.tpm))
        for p in settings.providers
    )
    regions = node_regions(settings, base.stats_slots)  # metrics, health, live settings
    regions = (*regions, cluster_region())  # Redis up or down, live nodes
    regions = (*regions, lease_region(settings))  # the node's leases of cluster-wide limits
    regions = (*regions, keys_region())  # tenant keys: their limits, in flight, budgets
    buckets = (*base.buckets, *pauses, *tokens)
    return shm.NodeLayout(buckets, base.stats, base.stats_slots, regions)
