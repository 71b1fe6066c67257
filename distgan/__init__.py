"""distgan: train GANs on one CPU or across many GPUs and nodes."""

__version__ = "0.1.0"
