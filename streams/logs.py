"""How the worker's processes log: one format, so that their lines read (and parse) alike."""

from __future__ import annotations

import logging

LOG_FORMAT = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str | int) -> None:
    """Log to stderr at ``level`` in :data:`LOG_FORMAT`."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
