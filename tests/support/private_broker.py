"""A broker of a test's own (deploy/local/kafka with its own folder and ports), to break at will.

The session's broker is shared by every test and every developer on the machine; faults are
injected only into one of these.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from .broker import local_broker, reachable
from .worker import free_port


@dataclass
class PrivateBroker:
    home: Path
    port: int
    controller_port: int

    @classmethod
    def in_folder(cls, home: Path) -> PrivateBroker:
        return cls(home, free_port(), free_port())

    @property
    def env(self) -> dict[str, str]:
        return {
            "KAFKA_LOCAL_HOME": str(self.home),
            "KAFKA_LOCAL_PORT": str(self.port),
            "KAFKA_LOCAL_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_HEAP_OPTS": "-Xms256m -Xmx512m",
        }

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        """Start it (or find it running) and wait until it answers; returns its address."""
        address = local_broker("start", self.env, timeout=180)
        assert address == self.address, (address, self.address)
        return address

    def stop(self) -> None:
        """A clean stop (SIGTERM; the script kills it if it hangs)."""
        local_broker("stop", self.env, timeout=120)
        assert not reachable(self.address, timeout=1.0)

    def kill(self) -> None:
        """SIGKILL: no flush, no clean shutdown, sockets cut mid-request."""
        pid = int((self.home / "kafka.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while reachable(self.address, timeout=0.5):
            assert time.monotonic() < deadline, "the killed broker still answers"
            time.sleep(0.1)
