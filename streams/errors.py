"""Every error the service raises on purpose, under one root. Docstrings say what to do."""


class TrustServiceError(Exception):
    """Root of the service's own errors."""


class TopicLayoutError(TrustServiceError):
    """Topics are missing or disagree in partition count; the message says how to fix them."""


class InvalidSettings(TrustServiceError, ValueError):
    """The settings are invalid, or a ``TRUST_`` variable is not a setting; fix what is named.

    ``problems`` pairs the name each problem is about (an environment variable or a parameter;
    ``None`` when it concerns several) with what is wrong, so that a command line can name the
    flag that gave the value instead.
    """

    def __init__(self, problems: list[tuple[str | None, str]]) -> None:
        self.problems = tuple(problems)
        shown = (message if name is None else f"{name}: {message}" for name, message in problems)
        super().__init__("invalid settings: " + "; ".join(shown))
