"""Pure scoring logic: no Faust, no Kafka, no I/O.

Everything here is deterministic given its inputs, so the worker, the tests' oracle comparisons and
the benchmarks all exercise exactly the same code.
"""
