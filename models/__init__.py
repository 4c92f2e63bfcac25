"""Model code beneath the compiler: fx-traceable Hydra transformers and checkpoint loading."""
