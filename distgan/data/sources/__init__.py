"""Dataset converters: one module per on-disk layout, each exposing ``convert(args) -> manifest``.

``add_arguments(parser)`` declares the source's own command-line options for
``distgan shards SOURCE …`` (the shared ones come from ``_common.add_common_arguments``).
"""

from distgan.data.sources import (
    celeba,
    cifar10,
    digits,
    folder,
    paired,
    photos,
    places365,
    unpaired,
)

SOURCES = {
    "digits": digits,
    "photos": photos,
    "cifar10": cifar10,
    "celeba": celeba,
    "places365": places365,
    "folder": folder,
    "paired": paired,
    "unpaired": unpaired,
}
