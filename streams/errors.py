"""Every error the service raises on purpose, under one root. Docstrings say what to do."""


class TrustServiceError(Exception):
    """Root of the service's own errors."""


class TopicLayoutError(TrustServiceError):
    """Topics are missing or disagree in partition count; the message says how to fix them."""
