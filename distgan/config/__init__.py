"""Typed run configuration: named YAML recipes + dotted command-line overrides.

A *recipe* is a YAML file (``distgan/configs/<name>.yaml``, or any path) that says what to train:
data, steps, optimizers, hyper-parameters. Its ``family:`` names the Python class that says how
(``family: dcgan`` → ``distgan/families/dcgan.py``; see distgan/families/base.py).

This package is a leaf: the schema (``schema.py``), the recipes' YAML and overrides
(``loading.py``), and nothing that knows a family or an evaluator. Loading a recipe for a run —
the schema, then the checks that need the family (its ``model:``/``loss:`` schemas, network
names, streams) and the evaluators (metric names, ``eval.best``) — is
:func:`distgan.recipe.load_recipe`.

Every mistake becomes a :class:`ConfigError` whose message names the offending key and the
allowed values; the CLI prints it as one line and exits with code 2.
"""

from distgan.config.loading import (
    format_validation_error,
    parse_config,
    read_recipe,
    recipe_names,
    to_yaml,
    validate_section,
)
from distgan.config.schema import (
    SHORTHANDS,
    Config,
    DataConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    parse_duration,
)
from distgan.config.sections import BEST, AugConfig, EvalConfig, InitConfig, LogConfig
from distgan.errors import ConfigError

__all__ = [
    "BEST",
    "SHORTHANDS",
    "AugConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "InitConfig",
    "LogConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "format_validation_error",
    "parse_config",
    "parse_duration",
    "read_recipe",
    "recipe_names",
    "to_yaml",
    "validate_section",
]
