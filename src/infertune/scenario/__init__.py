"""Serving: MLPerf LoadGen scenarios driving a dynamically batching system under test built from a ladder variant."""
