"""What every route class of the API shares: the worker's pipeline and request builder."""

from __future__ import annotations

from aigateway.api.builder import RequestBuilder
from aigateway.core.pipeline import Pipeline


class PipelineRoutes:
    """Handlers bound to the worker's pipeline (set when the lifespan starts), reading
    bodies up to ``max_body_bytes`` and building requests with ``builder``."""

    def __init__(self, max_body_bytes: int, builder: RequestBuilder) -> None:
        self.max_body_bytes = max_body_bytes
        self.builder = builder
        self.pipeline: Pipeline | None = None

    def _pipeline(self) -> Pipeline:
        assert self.pipeline is not None, "the app's lifespan has not started"
        return self.pipeline
