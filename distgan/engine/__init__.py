"""The generic training engine: runtime (devices, precision), checkpoints, EMA, logging, loop."""
