"""Dataset converters: one module per on-disk layout, each exposing ``convert(args) -> manifest``.

``add_arguments(parser)`` declares the source's own command-line options for
``distgan shards SOURCE …``.
"""

from distgan.data.sources import digits

SOURCES = {"digits": digits}
