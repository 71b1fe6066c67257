"""Under 2-process DDP the critic's gradients *with* the gradient penalty equal those of a single
process on the concatenated global batch (acceptance 3).

Each rank runs the shipped recipes' own D loss (families/_adversarial.py) through the critic
wrapped by the engine's accelerator (DDP, gloo, static_graph off); rank 0 also runs it without
DDP on both ranks' data concatenated. The random draws (z, ε) of a rank are the rows of the
single process's draws that belong to its samples, so the two computations see the same numbers.
StyleGAN2's R1 and path-length phases are checked the same way (``stylegan2_cases``). One more
case checks the generator's side: with n_critic = 1 the G phase back-propagates through
the D phase's fakes (``Phase.prepares``), and G's gradients must still be DDP's global average.

    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 tests/ddp_penalty_check.py OUT.json
"""

from __future__ import annotations

import copy
import json
import sys

import torch

from distgan.data.info import DatasetInfo
from distgan.engine.runtime import make_accelerator
from distgan.families import build_family
from distgan.families.base import Nets, StepContext
from distgan.recipe import load_recipe

N = 4  # samples per rank
CASES = {
    # the seed's WGAN-GP critic: wasserstein + λ·GP on every step
    "wgangp": ("digits-wgangp", ["model.g_channels=[16,8,8]", "model.d_channels=[8,8,8]"]),
    # SAGAN: hinge, spectral norm, self-attention, projection D, plus lazy GP and R1 (gain 2)
    "sagan+gp+r1": (
        "cifar10-sagan",
        [
            "model.g_channels=[16,16,16,16]",
            "model.d_channels=[16,16,16,16]",
            "loss.gp_weight=10",
            "loss.r1_gamma=1",
            "loss.reg_every=2",
        ],
    ),
}


class SlicedContext(StepContext):
    """Draws the global batch's random numbers and keeps this rank's rows."""

    def __init__(self, rank: int, world: int, step: int = 0) -> None:
        super().__init__(torch.device("cpu"), torch.Generator().manual_seed(0))
        self.rank, self.world, self.calls = rank, world, 0
        self.enter(step, None, prepares=("G",))  # as the engine enters the D phase

    def _draw(self, fn, shape: tuple[int, ...]) -> torch.Tensor:
        generator = torch.Generator().manual_seed(1000 + self.calls)
        self.calls += 1
        if not shape:  # one value for the whole (global) batch
            return fn(shape, generator=generator)
        n = shape[0]
        full = fn((n * self.world, *shape[1:]), generator=generator)
        return full[self.rank * n : (self.rank + 1) * n]

    def randn(self, *shape: int) -> torch.Tensor:
        return self._draw(torch.randn, shape)

    def rand(self, *shape: int) -> torch.Tensor:
        return self._draw(torch.rand, shape)

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        return self._draw(lambda size, **kw: torch.randint(high, size, **kw), shape)


def critic_grads(recipe, D, G, batch, ctx) -> tuple[list[torch.Tensor], dict[str, float]]:
    D.zero_grad(set_to_none=True)
    loss, logs = recipe.d_loss(Nets({"D": D, "G": G}), batch, ctx)
    loss.backward()
    module = getattr(D, "module", D)
    return [p.grad.clone() for p in module.parameters()], {k: v.item() for k, v in logs.items()}


def main(out: str) -> None:
    # float64, so that summation order (all-reduce vs one batch) leaves ~1e-15 relative noise
    # and any real mismatch stands out by many orders of magnitude.
    torch.set_default_dtype(torch.float64)
    results = {}
    accelerator = None
    for case, (name, overrides) in CASES.items():
        cfg = load_recipe(name, [*overrides, "model.z_dim=8", "train.num_processes=2"])
        accelerator = accelerator or make_accelerator(cfg)
        rank, world = accelerator.process_index, accelerator.num_processes
        channels, res = (1, 32) if name.startswith("digits") else (3, 32)
        info = DatasetInfo(res, channels, [str(i) for i in range(10)], 100)
        recipe = build_family(cfg, {"": info})
        torch.manual_seed(0)
        models = recipe.build_networks()
        for name_, p in models["D"].named_parameters():
            if name_.endswith("gamma"):  # self-attention starts as the identity: switch it on
                p.data.fill_(0.5)
        G = models["G"].eval().requires_grad_(False)  # frozen in the D phase; eval: no batch stats
        D_ref = copy.deepcopy(models["D"])
        D = accelerator.prepare_model(models["D"])

        g = torch.Generator().manual_seed(7)
        images = torch.rand(N * world, channels, res, res, generator=g) * 2 - 1
        labels = torch.randint(10, (N * world,), generator=g)
        local = {
            "image": images[rank * N : (rank + 1) * N],
            "label": labels[rank * N : (rank + 1) * N],
        }
        ddp, _ = critic_grads(recipe, D, G, local, SlicedContext(rank, world))
        if rank == 0:
            ref, ref_logs = critic_grads(
                recipe, D_ref, G, {"image": images, "label": labels}, SlicedContext(0, 1)
            )
            errors = [
                (a - b).norm().item() / max(b.norm().item(), 1e-300)
                for a, b in zip(ddp, ref, strict=True)
            ]
            results[case] = {
                "parameters": len(ref),
                "max_relative_error": max(errors),  # max over parameters of ‖ddp − ref‖/‖ref‖
                "max_abs_error": max(
                    (a - b).abs().max().item() for a, b in zip(ddp, ref, strict=True)
                ),
                "penalties": {k: v for k, v in ref_logs.items() if k in ("D/gp", "D/r1")},
            }
        accelerator.wait_for_everyone()
    results["G through reused fakes"] = generator_case(accelerator)
    results.update(stylegan2_cases(accelerator))
    if accelerator.is_main_process:
        with open(out, "w") as f:
            json.dump(results, f, indent=2)


def generator_grads(recipe, D, G, batch, ctx) -> list[torch.Tensor]:
    """The engine's D then G phase of one step with n_critic = 1: G runs once, in the D phase
    (``Phase.prepares``), and the G phase back-propagates through those fakes."""
    recipe.d_loss(Nets({"D": D, "G": G}), batch, ctx)
    assert "fake" in ctx.scratch, "the D phase did not hand its fakes to the G phase"
    G.zero_grad(set_to_none=True)
    loss, _ = recipe.g_loss(Nets({"D": D, "G": G}), batch, ctx)
    loss.backward()
    return [p.grad.clone() for p in getattr(G, "module", G).parameters()]


def generator_case(accelerator) -> dict[str, float] | None:
    """G's gradients through the D phase's fakes under DDP equal one process's (no batch
    statistics in G, so that the split of the batch cannot matter)."""
    overrides = ["model.g_channels=[16,8,8]", "model.d_channels=[8,8,8]", "model.z_dim=8"]
    cfg = load_recipe("digits-wgangp", [*overrides, "loss.n_critic=1", "model.g_batchnorm=false"])
    rank, world = accelerator.process_index, accelerator.num_processes
    recipe = build_family(cfg, {"": DatasetInfo(32, 1, [], 100)})
    assert recipe.phases[0].prepares == ("G",)
    torch.manual_seed(0)
    models = recipe.build_networks()
    D = models["D"].requires_grad_(False)  # frozen in the G phase
    G_ref = copy.deepcopy(models["G"])
    G = accelerator.prepare_model(models["G"])
    images = torch.rand(N * world, 1, 32, 32, generator=torch.Generator().manual_seed(7)) * 2 - 1
    ddp = generator_grads(
        recipe, D, G, {"image": images[rank * N : (rank + 1) * N]}, SlicedContext(rank, world)
    )
    result = None
    if rank == 0:
        ref = generator_grads(recipe, D, G_ref, {"image": images}, SlicedContext(0, 1))
        errors = [(a - b).norm() / b.norm() for a, b in zip(ddp, ref, strict=True)]
        result = {
            "parameters": len(ref),
            "max_relative_error": max(errors).item(),
            "penalties": {"G grad norm": sum(g.norm() for g in ref).item()},
        }
    accelerator.wait_for_everyone()
    return result


# StyleGAN2's lazy penalties, each a phase of its own: R1 (D, conditional: the label projection
# too) and path length (G, with style mixing and noise inputs; pl_mean is run-wide, set here).
# Minibatch-stddev groups of 1, so that no statistic spans the samples of one rank.
SG2 = ["model.z_dim=8", "model.w_dim=8", "model.channel_base=64", "model.channel_max=8"]
SG2 += ["model.map_layers=2", "model.d_map_layers=2", "model.mbstd_group=1", "loss.pl_weight=2"]
SG2 += ["loss.style_mixing=0.9"]


def stylegan2_cases(accelerator) -> dict[str, dict]:
    rank, world = accelerator.process_index, accelerator.num_processes
    results = {}
    for case, phase_name, net, conditional in (
        ("stylegan2 R1", "D_r1", "D", True),
        ("stylegan2 path length", "G_pl", "G", False),
    ):
        cfg = load_recipe("digits-stylegan2", [*SG2, f"model.conditional={conditional}"])
        family = build_family(cfg, {"": DatasetInfo(32, 1, [str(i) for i in range(10)], 100)})
        family.pl_mean = torch.tensor(0.3, dtype=torch.float64)
        phase = next(p for p in family.phases if p.name == phase_name)
        torch.manual_seed(0)
        models = family.build_networks()
        for name_, p in models[net].named_parameters():
            if name_.endswith("noise_strength"):  # starts at 0: make the noise count
                p.data.fill_(0.1)
        ref = copy.deepcopy(models[net])
        g = torch.Generator().manual_seed(7)
        images = torch.rand(N * world, 1, 32, 32, generator=g) * 2 - 1
        labels = torch.randint(10, (N * world,), generator=g)

        def grads(module, batch, ctx, net=net, models=models, phase=phase):
            module.zero_grad(set_to_none=True)
            ctx.enter(16, None)
            plain = getattr(module, "module", module)
            loss, logs = phase.loss(Nets({**models, net: plain}, {net: module}), batch, ctx)
            loss.backward()
            return [p.grad.clone() for p in plain.parameters()], logs

        wrapped = accelerator.prepare_model(models[net])
        local = {
            "image": images[rank * N : (rank + 1) * N],
            "label": labels[rank * N : (rank + 1) * N],
        }
        ddp, _ = grads(wrapped, local, SlicedContext(rank, world))
        if rank == 0:
            single, logs = grads(ref, {"image": images, "label": labels}, SlicedContext(0, 1))
            pairs = list(zip(ddp, single, strict=True))
            results[case] = {
                "parameters": len(pairs),
                "max_relative_error": max(
                    ((a - b).norm() / max(b.norm().item(), 1e-300)).item() for a, b in pairs
                ),
                "penalties": {
                    k: v.item() for k, v in logs.items() if k in ("D/r1", "G/pl_penalty")
                },
            }
        accelerator.wait_for_everyone()
    return results


if __name__ == "__main__":
    main(sys.argv[1])
    from distgan.cli import exit_before_finalizing

    exit_before_finalizing(0)  # (a gloo rank may abort in interpreter finalization: cli.py)
