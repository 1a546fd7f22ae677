"""Executors: where cells run (a worker process per variant, or in-process)."""
