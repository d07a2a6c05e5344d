"""The SDK's errors, under the service's root error."""

from __future__ import annotations

from streams.errors import TrustServiceError


class InvalidSignal(TrustServiceError, ValueError):
    """A signal broke the contract and was not sent. The message names the field and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class PublisherNotRunning(TrustServiceError, RuntimeError):
    """The publisher was never started or is already closed: use ``async with`` / ``with``."""


class PublishFailed(TrustServiceError):
    """Records the producer accepted were not acknowledged by the broker; they may be lost.

    ``failures`` holds the error of each record that failed. Records published after them are
    unaffected; resend the lost ones if the signals matter.
    """

    def __init__(self, failures: list[BaseException]) -> None:
        first = failures[0]
        super().__init__(
            f"{len(failures)} signal(s) were not acknowledged by the broker; "
            f"first error: {type(first).__name__}: {first}"
        )
        self.failures = failures
