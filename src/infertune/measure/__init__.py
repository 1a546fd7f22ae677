"""Measurement, in one place for every backend: the timer, the statistics and the memory probes."""
