"""GAN families. One module per family; ``family: NAME`` in a recipe YAML selects
``distgan/recipes/NAME.py``, whose ``RECIPE`` class the engine drives.
"""

from __future__ import annotations

import importlib
import pkgutil

from distgan.recipes.base import Phase, Recipe


def family_names() -> list[str]:
    import distgan.recipes as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name != "base")


def get_recipe(family: str) -> type[Recipe]:
    from distgan.config import ConfigError

    if family not in family_names():
        raise ConfigError(f"unknown family '{family}'; valid families: {', '.join(family_names())}")
    return importlib.import_module(f"distgan.recipes.{family}").RECIPE


__all__ = ["Phase", "Recipe", "family_names", "get_recipe"]
