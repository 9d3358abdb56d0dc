"""Training: the loop, its configuration, metrics, sampling and saved models."""
