"""Agent state: per-partition RocksDB databases, the compacted changelog they are confirmed by,
the decoded-state cache, restoring and checking a partition's database."""
