"""Reports and comparisons; they read only the run folder (contracts §3), never the model."""
