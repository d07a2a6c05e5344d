"""Helpers shared by the test suite: a real broker, the worker as a subprocess, Kafka I/O."""
