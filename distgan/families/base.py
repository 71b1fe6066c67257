"""The family / engine contract.

A *recipe* (YAML) names a *family* (a Python class): the family says **what** to optimise, the
engine decides **how** (processes, devices, precision, DDP/DeepSpeed, checkpoints, logging,
evaluation). A family declares, as names and small objects:

* ``networks``: the names of the networks ``build_networks`` returns (e.g. ``("G", "D")``); the
  recipe's ``optim.<name>`` configures the optimizer of each trained one;
* ``ema``: the networks the engine keeps an exponential moving average of (``<name>_ema`` in
  checkpoints); sampling, previews and evaluation use these copies;
* ``inference``: the networks needed to produce outputs (what ``distgan export`` writes);
* ``streams``: the named data streams it reads (``()``: one stream, ``data.shards: DIR``;
  ``("A", "B")``: ``data.shards: {A: DIR, B: DIR}``, batches ``{"A": {...}, "B": {...}}``);
* ``needs``: what it needs from the engine and the data beyond noise, as names from
  :data:`NEEDS` (unknown names are refused when the family is loaded):

  - ``"sample_batch"``: ``sample`` translates a batch of data (image-to-image) instead of
    drawing noise (and ``translate`` maps images of one domain to the other); declare
    ``"preview_batch"`` with it;
  - ``"preview_batch"``: ``preview`` receives a fixed batch of ``log.samples_per_class``
    held-out samples (a translation's inputs, a VAE's reconstructions);
  - ``"paired_data"``: its shards pair each image with its target (``distgan shards paired``);
* ``num_classes``: the classes its networks are conditioned on (0: unconditional), which
  sampling, previews and evaluation give labels for;
* ``ModelConfig`` / ``LossConfig``: the schemas of its ``model:`` and ``loss:`` sections;
* ``phases``: the optimisation schedule of one step, each a :class:`Phase`.

A family is made by ``distgan.families.build_family`` from its two sections, already validated
(:class:`FamilySections`: ``self.hp`` and ``self.loss_cfg``), a few facts about the run
(:class:`RunFacts`: ``self.facts``) and the shapes of its data streams; it never sees the whole
configuration.

A phase's loss receives a :class:`Nets` view in which the networks that phase trains (or
prepares for a later phase: ``Phase.prepares``) are the distributed (DDP) wrappers and every other
network is the plain module with its parameters frozen, so e.g. the G step back-propagates
*through* D without touching D's gradients or its gradient synchronisation (the rule
DeepSpeed's one-engine-per-network setup needs too).

Everything else has a default: ``sample`` (outputs for ``distgan sample`` and evaluation),
``preview`` (the grid logged every ``log.sample_every`` steps), ``reference`` (the real images
outputs are compared with), ``state_dict``/``load_state_dict`` for state of the family's own
(e.g. CycleGAN's image pools), saved per rank in every checkpoint, and the *run-wide* state, equal
on every rank and saved once: ``run_state_every`` steps apart the engine sums what the losses
``ctx.tally``-ed over all ranks and hands the totals to ``update_run_state`` (e.g. ADA's p from
E[sign D(real)]); ``run_state_dict``/``load_run_state_dict`` save and restore it.

``discriminators`` names the networks that ``init.freeze_d=K`` applies to (FreezeD: their first K
blocks from the image input side stay fixed while fine-tuning; engine/transfer.py). Each must
list its blocks in input order with ``input_blocks()`` (the contract: distgan/models/freeze.py);
a family that declares none refuses ``init.freeze_d``. ``init.from`` needs nothing of a family.

``augments`` names the networks whose inputs pass through ``ctx.augment`` (the recipe's ``aug:``
stage: distgan/augment.py); a recipe with an ``aug:`` section is refused for a family that
declares none.

Families whose outputs come from a latent vector also describe their latent space, for
``distgan latent`` and ``distgan.load``: ``latent_dim`` and ``decode`` (then ``sample`` draws
z ~ N(0, I) and decodes it), ``decode_truncated`` where an average latent allows truncation,
``encode`` where they have an encoder (VAE), and ``latent_layers``
where groups of latent dimensions act on one layer each (EigenGAN).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from distgan.data.info import DatasetInfo
from distgan.errors import ConfigError
from distgan.families.context import StepContext

Batch = dict[str, Any]
Logs = dict[str, torch.Tensor]


class Nets:
    """Attribute access to the networks (``nets.G``, ``nets["D"]``).

    During a phase, a network the phase trains is its distributed wrapper: call it for forward
    passes (its gradients are then synchronised). ``nets.raw(name)`` is always the plain module,
    for the network's own methods and attributes (a DDP wrapper exposes only ``forward``); use
    it for work whose gradients flow into the same backward as a wrapped forward pass.
    """

    def __init__(
        self, plain: dict[str, nn.Module], wrapped: dict[str, nn.Module] | None = None
    ) -> None:
        self._plain = plain
        self._wrapped = wrapped or {}

    def __getattr__(self, name: str) -> nn.Module:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> nn.Module:
        if name in self._wrapped:
            return self._wrapped[name]
        if name in self._plain:
            return self._plain[name]
        raise AttributeError(f"no network named '{name}' (networks: {', '.join(self._plain)})")

    @classmethod
    def for_outputs(
        cls, networks: dict[str, nn.Module], ema: dict[str, nn.Module], use_ema: bool
    ) -> Nets:
        """The networks outputs come from: each one's EMA copy where it is kept and ``use_ema``,
        else the trained network (previews, evaluation, ``distgan sample``)."""
        return cls({n: ema[n] if use_ema and n in ema else m for n, m in networks.items()})

    def __contains__(self, name: str) -> bool:
        return name in self._plain

    def __iter__(self) -> Iterator[str]:
        return iter(self._plain)

    def raw(self, name: str) -> nn.Module:
        """The plain module of ``name`` (never the DDP wrapper)."""
        if name not in self._plain:
            raise AttributeError(f"no network named '{name}' (networks: {', '.join(self._plain)})")
        return self._plain[name]


LossFn = Callable[[Nets, Batch, StepContext], tuple[torch.Tensor, Logs]]


@dataclass(frozen=True)
class Phase:
    """One forward/backward of ``loss``, then one optimizer step of each network in ``trains``,
    on the steps where ``step % every == 0``. Phases run in the order listed.

    ``prepares``: networks whose forward pass this phase runs *for a later phase of the same
    step* to back-propagate through, handed over in ``ctx.scratch`` (e.g. the D phase's G(z),
    which the G phase reuses instead of running G again). In this phase they are live — their
    distributed wrapper, gradients on — but this phase's own loss must use their outputs
    detached; each must be trained by a later phase that runs whenever this one does. Under
    gradient accumulation the engine keeps no graph across micro-batches: see
    ``StepContext.prepares``.

    ``lazy_correction``: this phase is a regularization of its own, run every ``every`` steps
    beside the networks' main phase; the optimizers of the networks it trains then get
    StyleGAN2's correction for the extra steps (lr × r and betas ** r, r = every / (every + 1)).
    """

    name: str
    trains: tuple[str, ...]
    loss: LossFn
    every: int = 1
    prepares: tuple[str, ...] = ()
    lazy_correction: bool = False

    def __post_init__(self) -> None:
        for field in ("trains", "prepares"):  # Phase("D", trains="D", …) means ("D",)
            if isinstance(getattr(self, field), str):
                object.__setattr__(self, field, (getattr(self, field),))

    @property
    def live(self) -> tuple[str, ...]:
        """The networks with gradients on in this phase: those it trains or prepares."""
        return (*self.trains, *self.prepares)


def check_phases(phases: list[Phase]) -> None:
    """Refuse a ``prepares`` that no later phase of the same step would back-propagate."""
    for i, phase in enumerate(phases):
        for name in phase.prepares:
            later = [p for p in phases[i + 1 :] if name in p.trains]
            if not any(phase.every % p.every == 0 for p in later):
                raise ValueError(
                    f"phase '{phase.name}' prepares '{name}', but no later phase trains it on "
                    f"every step that '{phase.name}' runs"
                )


@dataclass(frozen=True)
class LatentLayer:
    """Latent dimensions ``dims`` of z act on one layer; ``importance`` [len] orders them
    (EigenGAN: |L|, the learned scale of each basis direction)."""

    name: str
    dims: slice
    importance: torch.Tensor


class Section(BaseModel):
    """Base for a family's ``model:`` and ``loss:`` schemas (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# what a family may declare in ``needs`` → what it means
NEEDS = {
    "sample_batch": "sample() translates a batch of data instead of drawing noise",
    "preview_batch": "preview() receives a fixed batch of held-out samples",
    "paired_data": "its shards pair each image with its target (distgan shards paired)",
}


@dataclass(frozen=True)
class FamilySections:
    """The family's own sections of the recipe, validated by its schemas."""

    model: Section  # model: (an instance of the family's ModelConfig)
    loss: Section  # loss: (an instance of its LossConfig)


@dataclass(frozen=True)
class RunFacts:
    """What a family knows about the run beyond its own sections."""

    recipe: str  # the recipe's name (for messages)
    family: str  # the family as the recipe names it (for messages)
    steps: int  # train.steps (schedules that anneal over the run)
    samples_per_class: int  # log.samples_per_class (the preview grid's columns)
    lab: bool = False  # data.lab: images in CIE L*a*b*
    batch_size: int = 0  # train.batch_size: a process's (micro-)batch (0: not training)


class Family(ABC):
    networks: ClassVar[tuple[str, ...]]
    ema: ClassVar[tuple[str, ...]] = ()
    inference: ClassVar[tuple[str, ...]] = ()
    streams: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[frozenset[str]] = frozenset()  # names from NEEDS
    augments: ClassVar[tuple[str, ...]] = ()  # networks whose inputs pass ctx.augment
    discriminators: ClassVar[tuple[str, ...]] = ()  # what init.freeze_d freezes blocks of
    ModelConfig: ClassVar[type[Section]] = Section
    LossConfig: ClassVar[type[Section]] = Section

    def __init__(
        self, sections: FamilySections, facts: RunFacts, data: dict[str, DatasetInfo]
    ) -> None:
        """``data``: the shape of each stream's data (key ``""`` for a single stream)."""
        self.hp = sections.model
        self.loss_cfg = sections.loss
        self.facts = facts
        self.stream_info = data
        self.data = next(iter(data.values()))  # the (first) stream's shape

    @property
    def num_classes(self) -> int:
        """Classes the networks are conditioned on (0: unconditional). Families that condition
        on labels override it; sampling, previews and evaluation then pass labels."""
        return 0

    @abstractmethod
    def build_networks(self) -> dict[str, nn.Module]:
        """The networks named in ``networks``, built identically on every rank."""

    @property
    @abstractmethod
    def phases(self) -> list[Phase]:
        """The optimisation schedule of one training step."""

    def sample(
        self, nets: Nets, n: int, generator: torch.Generator, batch: Batch | None = None
    ) -> torch.Tensor:
        """``n`` output images in [-1, 1], conditioned on ``batch`` where the family uses it
        (labels for conditional GANs, input images for ``"sample_batch"`` families). By default:
        ``decode`` of z ~ N(0, I) drawn from ``generator`` (one ``[n, latent_dim]`` draw, so
        the latent of sample k of seed s is ``randn(n, latent_dim)[k]`` of that seed)."""
        if not self.latent_dim:
            raise NotImplementedError(f"family '{self.facts.family}' does not sample")
        z = torch.randn(n, self.latent_dim, device=generator.device, generator=generator)
        return self.decode(nets, z)

    # ------------------------------------------------------------------ the latent space

    @property
    def latent_dim(self) -> int:
        """Size of the latent vector ``decode`` takes (0: outputs do not come from one)."""
        return 0

    def decode(self, nets: Nets, z: torch.Tensor, labels: torch.Tensor | None = None):
        """Images in [-1, 1] from latent vectors ``z`` [N, latent_dim] (and class labels for
        conditional models)."""
        raise ConfigError(f"family '{self.facts.family}' has no latent space")

    def decode_truncated(
        self, nets: Nets, z: torch.Tensor, labels: torch.Tensor | None, truncation: float
    ) -> torch.Tensor:
        """``decode`` with the truncation trick: the intermediate latent pulled towards its
        average, w = lerp(w_avg, w, ``truncation``), for families that keep one (StyleGAN2)."""
        raise ConfigError(
            f"family '{self.facts.family}' has no truncation (no average latent to pull towards)"
        )

    def encode(self, nets: Nets, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of q(z | x) for images in [-1, 1], for families with an encoder."""
        raise ConfigError(f"family '{self.facts.family}' has no encoder (a VAE has one)")

    def latent_layers(self, nets: Nets) -> list[LatentLayer]:
        """The groups of latent dimensions that each act on one layer (EigenGAN)."""
        raise ConfigError(f"family '{self.facts.family}' has no layer-wise latent dimensions")

    def preview(
        self, nets: Nets, batch: Batch | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, int]:
        """The preview grid (images in [-1, 1], images per row). ``batch``: a fixed batch of
        ``log.samples_per_class`` held-out samples for ``"preview_batch"`` families, else None."""
        per_row = self.facts.samples_per_class
        return self.sample(nets, per_row * per_row, generator, batch), per_row

    def translate(self, nets: Nets, images: torch.Tensor, direction: str = "AtoB") -> torch.Tensor:
        """Images in [-1, 1] (the network's input format) translated to the other domain, for
        families that translate data (``distgan translate``)."""
        raise ConfigError(f"family '{self.facts.family}' does not translate images")

    def reference(self, batch: Batch) -> torch.Tensor:
        """The real images that ``sample(…, batch)`` should resemble (for evaluation)."""
        return batch["image"]

    def state_dict(self) -> dict[str, Any]:
        """This rank's state of the family's own (tensors and plain values), if any."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned on this rank."""
        del state  # (no state of its own by default)

    def regroup_state(
        self, saved: list[dict[str, Any]], rank: int, world: int
    ) -> dict[str, Any] | None:
        """On a resume on another world size: rank ``rank`` of ``world``'s state made from
        every old rank's :meth:`state_dict` (``saved``), or None to drop it (the default)."""
        del saved, rank, world
        return None

    # ------------------------------------------------------------------ run-wide state

    run_state_every: int = 0  # steps between run-wide updates (0: the family has none)

    def update_run_state(self, totals: dict[str, torch.Tensor], step: int) -> Logs | None:
        """Update the run-wide state from ``totals``: every ``ctx.tally`` since the last update,
        summed over all ranks (float64). Called on every rank with the same totals after every
        ``run_state_every``-th step, so the state stays equal on every rank (see
        distgan/engine/run_state.py); returns values to log with the step, if any."""
        del totals, step
        return None

    def run_state_dict(self) -> dict[str, Any]:
        """State equal on every rank (e.g. ADA's p, a path-length mean): saved once."""
        return {}

    def load_run_state_dict(self, state: dict[str, Any]) -> None:
        del state
