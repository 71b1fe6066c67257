"""Model families. One module per family; ``family: NAME`` in a recipe selects
``distgan/families/NAME.py``, and a dotted ``family: package.module`` any importable module (your
own family, outside distgan). The module's ``FAMILY`` class is what the engine drives (the
contract: distgan/families/base.py). Modules starting with ``_`` hold code shared by families
(``_adversarial.py``: the two-player GAN schedule).
"""

from __future__ import annotations

import importlib
import pkgutil

from distgan.errors import ConfigError
from distgan.families.base import Family, Nets, Phase, StepContext


def family_names() -> list[str]:
    import distgan.families as pkg

    modules = pkgutil.iter_modules(pkg.__path__)
    contract = {"base", "context"}  # the contract's modules, not families
    return sorted(m.name for m in modules if m.name not in contract and not m.name.startswith("_"))


def get_family(name: str) -> type[Family]:
    if "." in name:  # a family of the user's own: an importable module path
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"family '{name}' cannot be imported ({err})") from None
    elif name in family_names():
        module = importlib.import_module(f"distgan.families.{name}")
    else:
        raise ConfigError(
            f"unknown family '{name}'; valid families: {', '.join(family_names())} "
            "(or an importable module path)"
        )
    family = getattr(module, "FAMILY", None)
    if not (isinstance(family, type) and issubclass(family, Family)):
        raise ConfigError(f"family module '{module.__name__}' defines no FAMILY class")
    return family


def build_family(cfg, data: dict) -> Family:
    """The recipe's family for a run whose streams have the shapes ``data`` ({stream: DatasetInfo};
    key ``""`` for a single stream). The one place a family object is made."""
    return get_family(cfg.family)(cfg, data)


__all__ = ["Family", "Nets", "Phase", "StepContext", "build_family", "family_names", "get_family"]
