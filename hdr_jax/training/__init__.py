"""Training: train state, checkpointing (model + data iterator), the generic loop and per-model tasks."""
