"""distgan's version, in a leaf module (``distgan.__version__`` re-exports it): the shards'
manifest records it without importing the package's Python API."""

__version__ = "0.1.0"
