"""Model families. One module per family; ``family: NAME`` in a recipe selects
``distgan/families/NAME.py``, and a dotted ``family: package.module`` any importable module (your
own family, outside distgan). The module's ``FAMILY`` class is what the engine drives (the
contract: distgan/families/base.py). Modules starting with ``_`` hold code shared by families
(``_adversarial.py``: the two-player GAN schedule).
"""

from __future__ import annotations

import importlib
import os
import pkgutil

from distgan.errors import CheckpointError, ConfigError
from distgan.families.base import NEEDS, Family, FamilySections, Nets, Phase, RunFacts, StepContext


def family_names() -> list[str]:
    import distgan.families as pkg

    modules = pkgutil.iter_modules(pkg.__path__)
    contract = {"base", "context"}  # the contract's modules, not families
    return sorted(m.name for m in modules if m.name not in contract and not m.name.startswith("_"))


PLUGINS_ENV = "DISTGAN_ALLOW_PLUGINS"


def check_checkpoint_family(name: str, source: object) -> None:
    """A checkpoint is data, not code: it may name a built-in family; a module path only when
    ``$DISTGAN_ALLOW_PLUGINS`` lists it (comma-separated), since importing a module runs it.
    Every path that builds a family from a checkpoint's configuration calls this first
    (:func:`distgan.recipe.recipe_from_checkpoint`). Recipes are trusted code: training from a
    recipe that names a module path imports it, and so does resuming it (the recipe names the
    family; a checkpoint's own ``config.family`` is never imported by a resume)."""
    if name in family_names():
        return
    allowed = {module.strip() for module in os.environ.get(PLUGINS_ENV, "").split(",")}
    if name in allowed:
        return
    raise CheckpointError(
        f"checkpoint '{source}' names family '{name}', which is not a built-in family: loading "
        f"it would import (run) that module; if you trust it, allow it with {PLUGINS_ENV}={name}"
    )


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
    unknown = sorted(set(family.needs) - set(NEEDS))
    if unknown:
        raise ConfigError(
            f"family '{name}' declares unknown needs {', '.join(unknown)}; valid: "
            f"{', '.join(NEEDS)} (distgan/families/base.py)"
        )
    if "sample_batch" in family.needs and "preview_batch" not in family.needs:
        raise ConfigError(f"family '{name}' needs 'sample_batch', so also 'preview_batch'")
    return family


def build_family(cfg, data: dict) -> Family:
    """The recipe's family for a run whose streams have the shapes ``data`` ({stream: DatasetInfo};
    key ``""`` for a single stream). The one place a family object is made: from its own
    sections, which ``distgan.recipe.check_recipe`` has validated, and a few facts of ``cfg``."""
    family = get_family(cfg.family)
    if not (isinstance(cfg.model, family.ModelConfig) and isinstance(cfg.loss, family.LossConfig)):
        raise TypeError(
            f"build_family: the model:/loss: sections of recipe '{cfg.name}' are not checked; "
            "load it with distgan.recipe.load_recipe (or pass it through check_recipe)"
        )
    info = next(iter(data.values()))
    if "paired_data" in family.needs and not info.paired:
        raise ConfigError(
            f"family '{cfg.family}' needs paired shards (A with its target B): convert them with "
            "`distgan shards paired`"
        )
    facts = RunFacts(
        recipe=cfg.name,
        family=cfg.family,
        steps=cfg.train.steps,
        samples_per_class=cfg.log.samples_per_class,
        lab=cfg.data.lab,
        batch_size=cfg.train.batch_size,
    )
    return family(FamilySections(model=cfg.model, loss=cfg.loss), facts, data)


__all__ = [
    "PLUGINS_ENV",
    "Family",
    "Nets",
    "Phase",
    "StepContext",
    "build_family",
    "check_checkpoint_family",
    "family_names",
    "get_family",
]
