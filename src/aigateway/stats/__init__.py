"""Metrics of the node: labelled series in shared memory and their Prometheus exposition."""
