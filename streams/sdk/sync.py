"""The synchronous publisher: the async one, run on an event loop thread of its own."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

from pydantic import SecretStr

from streams.kafka.security import KafkaSecurity, SaslMechanism, SecurityProtocol
from streams.scoring.model import Dimension
from streams.sdk.errors import PublisherNotRunning
from streams.sdk.publisher import (
    DEFAULT_CLIENT_ID,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TOPIC_PREFIX,
    SignalPublisher,
)
from streams.sdk.recorder import SignalRecorder
from streams.sdk.signals import PreparedSignal

log = logging.getLogger("streams.sdk")

P = ParamSpec("P")
_T = TypeVar("_T")


class SyncSignalPublisher(SignalRecorder[None]):
    """:class:`SignalPublisher` for code that is not async. Use it as ``with``, or call close().

    It runs its own event loop in a background thread. Each ``record_*`` call validates in the
    caller's thread (so :class:`InvalidSignal` is raised there and nothing is sent), then blocks
    until the producer has accepted the record; :meth:`flush` blocks until every accepted record
    is acknowledged. Calls from several threads are safe; each thread's signals keep their order.
    Connecting happens in the constructor, so a wrong address (or certificate, or password)
    fails there. The parameters are :class:`SignalPublisher`'s.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        linger_ms: int = 5,
        client_id: str = DEFAULT_CLIENT_ID,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        security_protocol: SecurityProtocol = "PLAINTEXT",
        sasl_mechanism: SaslMechanism | None = None,
        sasl_username: str | None = None,
        sasl_password: str | SecretStr | None = None,
        ssl_cafile: str | Path | None = None,
        ssl_certfile: str | Path | None = None,
        ssl_keyfile: str | Path | None = None,
        ssl_check_hostname: bool = True,
        **producer_options: Any,
    ) -> None:
        self._publisher = SignalPublisher(
            bootstrap_servers,
            topic_prefix=topic_prefix,
            linger_ms=linger_ms,
            client_id=client_id,
            max_message_bytes=max_message_bytes,
            security_protocol=security_protocol,
            sasl_mechanism=sasl_mechanism,
            sasl_username=sasl_username,
            sasl_password=sasl_password,
            ssl_cafile=ssl_cafile,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            ssl_check_hostname=ssl_check_hostname,
            **producer_options,
        )
        self._lock = threading.Lock()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        # A daemon thread, so a publisher someone forgot to close cannot keep the process alive.
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"{client_id}-loop", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._publisher.start())
        except BaseException:
            self._closed = True
            self._stop_loop()
            raise

    @property
    def topic_prefix(self) -> str:
        return self._publisher.topic_prefix

    @property
    def security(self) -> KafkaSecurity:
        return self._publisher.security

    def topic_for(self, dimension: Dimension | str) -> str:
        return self._publisher.topic_for(dimension)

    def publish(self, signal: PreparedSignal) -> None:
        """Hand one prepared signal to the producer; returns once it is accepted (enqueued)."""
        self._publisher.check_size(signal)
        self._call(self._publisher.publish(signal))

    def _record(
        self, build: Callable[P, PreparedSignal], *args: P.args, **kwargs: P.kwargs
    ) -> None:
        # Built in the caller's thread: an invalid signal raises here, and nothing is sent.
        self.publish(build(*args, **kwargs))

    def flush(self) -> None:
        """Block until every accepted signal is acknowledged; :class:`PublishFailed` if not."""
        self._call(self._publisher.flush())

    def close(self) -> None:
        """Flush, stop the producer and the background loop. Closing twice does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._call(self._publisher.stop(), closing=True)
        finally:
            self._stop_loop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception:
            log.exception("Publishing the signals accepted before %r failed", exc)

    def _call(self, work: Coroutine[Any, Any, _T], *, closing: bool = False) -> _T:
        if threading.current_thread() is self._thread:
            work.close()
            raise RuntimeError(
                "SyncSignalPublisher was called from its own event loop; from async code, use "
                "SignalPublisher instead"
            )
        if self._closed and not closing:
            work.close()
            raise PublisherNotRunning("the publisher is closed")
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
