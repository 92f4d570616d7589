"""Serving: the batcher, the service object, loading, readiness and draining."""
