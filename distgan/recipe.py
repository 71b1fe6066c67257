"""Loading a recipe for a run: the schema (distgan/config/), then the checks that need the
family and the evaluators, in one place above them.

:func:`load_recipe` (a recipe name or YAML path plus overrides: the CLI, ``distgan bench``, the
tests), :func:`recipe_from_dict` (a resolved configuration) and :func:`recipe_from_checkpoint`
(the one a checkpoint holds: its family must be built-in unless allowed) all end in
:func:`check_recipe`, which

* validates the family's ``model:`` and ``loss:`` sections with its schemas, once, and puts the
  validated sections in their place (``distgan.families.build_family`` takes them from there);
* checks ``optim.<network>`` against the family's networks, ``data.shards`` and ``eval.shards``
  against its streams, an ``aug:`` section against the family's ``augments``, ``eval.metrics``
  against the evaluators and ``eval.best`` against the metrics.

Every mistake is a one-line :class:`~distgan.errors.ConfigError`.
"""

from __future__ import annotations

from typing import Any

from distgan.config import BEST, Config, parse_config, read_recipe, validate_section
from distgan.errors import CheckpointError, ConfigError
from distgan.evaluation import check_metric, check_samples
from distgan.families import check_checkpoint_family, get_family


def load_recipe(recipe: str, overrides: list[str] | None = None) -> Config:
    """Resolve a recipe name (or YAML path) plus ``section.key=value`` overrides into a checked
    :class:`Config`."""
    return check_recipe(parse_config(read_recipe(recipe, overrides)))


def recipe_from_dict(raw: dict[str, Any]) -> Config:
    """The configuration saved in a checkpoint (or any resolved mapping), checked."""
    return check_recipe(parse_config(raw))


def recipe_from_checkpoint(state: dict[str, Any], source: object) -> Config:
    """The configuration a checkpoint holds, checked; its family must be built-in unless
    allowed (:func:`distgan.families.check_checkpoint_family`): the one way every command that
    loads a checkpoint (sample, export, eval, colorize, translate, latent, ``distgan.load``)
    gets its configuration."""
    raw = state.get("config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"checkpoint '{source}' holds no configuration mapping")
    if isinstance(raw.get("family"), str):
        check_checkpoint_family(raw["family"], source)
    return recipe_from_dict(raw)


def check_recipe(cfg: Config) -> Config:
    """The cross-checks of a schema-valid ``cfg``; its ``model:`` and ``loss:`` become the
    family's validated sections (defaults filled in). Returns ``cfg``."""
    family = get_family(cfg.family)
    cfg.model = validate_section(family.ModelConfig, cfg.model, "model.")
    cfg.loss = validate_section(family.LossConfig, cfg.loss, "loss.")
    for network in cfg.optim:
        if network not in family.networks:
            raise ConfigError(
                f"optim.{network}: family '{cfg.family}' has no network '{network}'; its "
                f"networks: {', '.join(family.networks)}"
            )
    for key, shards in (("data.shards", cfg.data.shards), ("eval.shards", cfg.eval.shards)):
        named = sorted(shards) if isinstance(shards, dict) else []
        if shards is not None and named != sorted(family.streams):
            want = (
                "one folder"
                if not family.streams
                else "{" + ", ".join(f"{s}: DIR" for s in family.streams) + "}"
            )
            raise ConfigError(f"{key}: family '{cfg.family}' reads {want}, not {shards!r}")
    if cfg.aug.active and not family.augments:
        key = f"aug.diffaug={','.join(cfg.aug.diffaug)}" if cfg.aug.diffaug else "aug.ada/aug.p"
        raise ConfigError(
            f"{key}: family '{cfg.family}' passes no images through the augmentation stage; "
            "remove the aug: settings"
        )
    for name in cfg.eval.metrics:
        check_metric(name)  # one line naming the valid ones if unknown
    if cfg.eval.every:
        check_samples(cfg.eval.metrics, cfg.eval.n)  # not at the first evaluation, hours later
    best = cfg.eval.best
    if best and best not in BEST:
        raise ConfigError(f"eval.best={best}: one of {', '.join(sorted(BEST))}")
    if best and BEST[best][0] not in cfg.eval.metrics:
        raise ConfigError(f"eval.best={best} needs '{BEST[best][0]}' in eval.metrics")
    return cfg
