"""FreezeD (Mo et al., 2020): fine-tune a discriminator with its first blocks kept fixed.

**The contract.** A discriminator that supports ``init.freeze_d=K`` has a method
``input_blocks()`` returning its blocks in input order: entry 0 takes the image (with its
from-image layer), each next one the previous one's output, one entry per resolution stage as
in the FreezeD reference and StyleGAN2-ADA's ``freeze_layers`` (its ``b{res}`` blocks from the
highest resolution down). The head (the last features → logit layers, the class projection,
StyleGAN2's 4×4 epilogue) is not a block: it always trains. The entries are views on the
network's own layers (e.g. slices of its ``nn.Sequential``), so listing them changes no
parameter name and no checkpoint. A family names the networks it applies to in
``Family.discriminators`` (distgan/families/base.py).

**Frozen** means the block computes the same function for the whole run: its parameters get
``requires_grad=False`` and stay out of the optimizer (and so out of DDP's gradient buckets), the
running statistics of its BatchNorm layers are kept (momentum 0: the block still normalises by
batch statistics in training mode, as before), and its spectral norms stop their power
iteration (σ stays the source's estimate).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import nn

from distgan.errors import ConfigError


@runtime_checkable
class HasInputBlocks(Protocol):
    """A discriminator that lists its blocks from the image input side (see the module)."""

    def input_blocks(self) -> list[nn.Module]: ...


def blocks_starting_at(
    layers: nn.Sequential, kind: type[nn.Module] | tuple[type[nn.Module], ...], head: int = 0
) -> list[nn.Module]:
    """``layers`` cut into blocks, each starting at a layer of type ``kind`` (the layers before
    the first one join it; those after a block's ``kind`` layer up to the next one belong to it:
    norm, activation, dropout, attention); the last ``head`` blocks are the head, not listed."""
    groups: list[list[nn.Module]] = [[]]
    for layer in layers:
        if isinstance(layer, kind) and any(isinstance(m, kind) for m in groups[-1]):
            groups.append([])
        groups[-1].append(layer)
    return [nn.Sequential(*group) for group in groups[: len(groups) - head]]


def freeze_(block: nn.Module) -> list[nn.Parameter]:
    """Keep ``block`` fixed for the rest of the run (see the module); returns its parameters."""
    for module in block.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.0  # running statistics kept (the counter still counts)
        if hasattr(module, "n_power_iterations"):  # torch's spectral-norm parametrization
            module.n_power_iterations = 0
    parameters = list(block.parameters())
    for parameter in parameters:
        parameter.requires_grad_(False)
    return parameters


def freeze_input_blocks(
    networks: dict[str, nn.Module], names: tuple[str, ...], k: int, family: str
) -> list[nn.Parameter]:
    """``init.freeze_d=k``: freeze the first ``k`` input blocks of each network in ``names`` (the
    family's ``discriminators``); returns the frozen parameters (none for ``k=0``)."""
    if not k:
        return []
    if not names:
        raise ConfigError(
            f"init.freeze_d={k}: family '{family}' has no discriminator to freeze; use "
            "init.freeze_d=0"
        )
    frozen: list[nn.Parameter] = []
    for name in names:
        module = networks[name]
        if not isinstance(module, HasInputBlocks):
            raise ConfigError(
                f"init.freeze_d={k}: {name} of family '{family}' ({type(module).__name__}) does "
                "not list its blocks in input order (input_blocks()); use init.freeze_d=0"
            )
        blocks = module.input_blocks()
        if k > len(blocks):
            raise ConfigError(
                f"init.freeze_d={k}: {name} has {len(blocks)} block{'s' * (len(blocks) != 1)} "
                "(its head always trains); "
                f"choose 0 to {len(blocks)}"
            )
        for block in blocks[:k]:
            frozen += freeze_(block)
    return frozen
