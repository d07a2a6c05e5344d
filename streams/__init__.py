"""Trust-score stream processor: per-agent trust scores computed from Kafka signal topics."""

__version__ = "0.1.0"
