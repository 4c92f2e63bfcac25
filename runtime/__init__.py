"""Execution: data, aggregation and metric state, checkpoints, the run folder, distribution."""
