"""What the workers of one node share in memory: the layout of the node's segment.

One rate bucket per provider (``<PROVIDER>_RPS``), one pause clock per provider (a
provider's 429 pauses it for every worker), and the stats every worker adds to: the
starter metrics plus admission's queue depths and outcomes per provider and priority.
"""

from __future__ import annotations

from aigateway import shm
from aigateway.config import Settings
from aigateway.core.admission import admission_metrics, pause_bucket_name, pause_bucket_spec
from aigateway.hotpath import StatsSchema
from aigateway.operations import node_regions


def stats_schema(settings: Settings) -> StatsSchema:
    base = shm.DEFAULT_STATS
    counters, gauges = admission_metrics([p.name for p in settings.providers])
    return StatsSchema(
        counters=(*base.counters, *counters, "embedding_calls_saved"),
        gauges=(*base.gauges, *gauges),
        histograms=base.histograms,
    )


def node_layout(settings: Settings) -> shm.NodeLayout:
    base = shm.node_layout(settings, stats_schema(settings))
    rate, burst = pause_bucket_spec()
    pauses = tuple(
        shm.BucketSpec(pause_bucket_name(p.name), rate, burst) for p in settings.providers
    )
    regions = node_regions(settings, base.stats_slots)  # metrics, health, live settings
    return shm.NodeLayout((*base.buckets, *pauses), base.stats, base.stats_slots, regions)
