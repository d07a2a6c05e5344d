"""How the service's processes log, so that their lines read (and parse) alike."""

from __future__ import annotations

import logging

#: Commands, and a worker until Faust takes its logging over.
LOG_FORMAT = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"
#: A running worker's lines as Faust writes them, with the process id: the worker's restore
#: processes write theirs to its stderr so too.
WORKER_LOG_FORMAT = "[%(asctime)s] [%(process)s] [%(levelname)s] %(message)s"


def configure_logging(level: str | int, fmt: str = LOG_FORMAT) -> None:
    """Log to stderr at ``level`` in ``fmt``."""
    logging.basicConfig(level=level, format=fmt)
