"""GAN families. One module per family; ``family: NAME`` in a recipe YAML selects
``distgan/recipes/NAME.py``, whose ``RECIPE`` class the engine drives. Modules starting with
``_`` hold code shared by families (``_adversarial.py``: the two-player GAN schedule).
"""

from __future__ import annotations

import importlib
import pkgutil

from distgan.recipes.base import Phase, Recipe


def family_names() -> list[str]:
    import distgan.recipes as pkg

    modules = pkgutil.iter_modules(pkg.__path__)
    return sorted(m.name for m in modules if m.name != "base" and not m.name.startswith("_"))


def get_recipe(family: str) -> type[Recipe]:
    from distgan.config import ConfigError

    if family not in family_names():
        raise ConfigError(f"unknown family '{family}'; valid families: {', '.join(family_names())}")
    return importlib.import_module(f"distgan.recipes.{family}").RECIPE


__all__ = ["Phase", "Recipe", "family_names", "get_recipe"]
