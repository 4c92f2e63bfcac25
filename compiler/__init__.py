"""torch.fx passes that turn a checked spec into an instrumented Hydra model."""
