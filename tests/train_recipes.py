"""Train several recipes one after the other in the *same* processes (tests only).

Starting 2 processes costs ~10–20 s on a 2-core CI machine; this runs the real engine
(``distgan.engine.trainer.train``: DDP over gloo, checkpoints, rank-sync check) for every
shipped recipe in one launch. The process group is kept between runs (the engine's
``end_training`` would destroy it). Usage, plainly (1 process) or under ``accelerate launch
--config_file launch/cpu-2proc.yaml``::

    tests/train_recipes.py RECIPE $'key=value\nkey=value' [RECIPE '…' …]   (one override a line)
"""

from __future__ import annotations

import sys

from accelerate.state import PartialState

from distgan.engine.trainer import train
from distgan.recipe import load_recipe


def main(argv: list[str]) -> None:
    destroy = PartialState.destroy_process_group
    PartialState.destroy_process_group = lambda self, group=None: None  # keep it for the next
    for name, overrides in zip(argv[::2], argv[1::2], strict=True):
        run_dir = train(load_recipe(name, overrides.split("\n")))
        print(f"trained {name} in {run_dir}", file=sys.stderr, flush=True)
    # Close the group before exiting: a gloo group left to the interpreter's exit can abort
    # a rank ("terminate called without an active exception") after all the work is done.
    destroy(PartialState())


if __name__ == "__main__":
    main(sys.argv[1:])
