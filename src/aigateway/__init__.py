"""aigateway: a high-throughput AI gateway between applications and LLM providers."""

__version__ = "0.1.0"
