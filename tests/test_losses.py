"""Losses and regularizers: analytic values, precision (bf16, fp16 scaling), DDP, lazy
regularization, n_critic and torch.compile."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, env_for_tests
from torch import nn

from distgan import losses, penalties
from distgan.data.info import DatasetInfo
from distgan.engine.runtime import Precision
from distgan.families import build_family
from distgan.families.base import Nets, StepContext
from distgan.recipe import load_recipe


class Linear(nn.Module):
    """f(x) = w·x on flattened images."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(dim, dtype=torch.float64))

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return x.flatten(1) @ self.w


def images(n: int = 6, shape: tuple[int, ...] = (3, 4, 4), seed: int = 0, **kw) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), **kw)


# --------------------------------------------------------------------------- 1. analytic


def test_gradient_penalty_of_a_linear_critic_is_analytic() -> None:
    torch.manual_seed(0)
    critic = Linear(48)
    real, fake = images(dtype=torch.float64), images(seed=1, dtype=torch.float64)
    eps = torch.rand(6, dtype=torch.float64)
    gp, grad_norm = penalties.gradient_penalty(critic, real, fake, eps)
    gp.backward()
    w = critic.w.detach()
    norm = w.norm()
    # ∇ₓ(w·x) = w for every interpolate: the penalty is (‖w‖ − 1)², its gradient 2(‖w‖ − 1)w/‖w‖.
    torch.testing.assert_close(gp.detach(), ((norm - 1) ** 2), rtol=1e-10, atol=0)
    torch.testing.assert_close(grad_norm, norm, rtol=1e-10, atol=0)
    torch.testing.assert_close(critic.w.grad, 2 * (norm - 1) * w / norm, rtol=1e-10, atol=0)


def test_r1_of_a_linear_critic_is_analytic() -> None:
    torch.manual_seed(0)
    critic = Linear(48)
    real = images(dtype=torch.float64).requires_grad_(True)
    r1 = penalties.r1_penalty(critic(real), real)
    r1.backward()
    w = critic.w.detach()
    torch.testing.assert_close(r1.detach(), w.pow(2).sum(), rtol=1e-10, atol=0)  # ‖w‖²
    torch.testing.assert_close(critic.w.grad, 2 * w, rtol=1e-10, atol=0)


# --------------------------------------------------------------------------- 2. precision


def small_critic() -> nn.Module:
    from distgan.models.wgan import WGANCritic

    torch.manual_seed(0)
    return WGANCritic(resolution=32, channels=3, d_channels=[16, 32, 64])


def penalty_and_grads(
    critic: nn.Module, dtype: torch.dtype | None, scaler=None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    critic.zero_grad(set_to_none=True)
    real, fake = images(8, (3, 32, 32)), images(8, (3, 32, 32), seed=1)
    eps = torch.rand(8, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        gp, _ = penalties.gradient_penalty(critic, real, fake, eps, scaler)
    assert gp.dtype == torch.float32  # computed in fp32 whatever the autocast dtype
    (gp if scaler is None else scaler.scale(gp)).backward()
    # Only the weights: ∇ₓD of a piecewise-linear net does not depend on the biases, whose
    # penalty gradient is exactly 0 (or None).
    grads = [p.grad.detach().clone() for n, p in critic.named_parameters() if "weight" in n]
    if scaler is not None:
        grads = [g / scaler.get_scale() for g in grads]
    return gp.detach(), grads


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def with_pytorchs_layers(critic: nn.Module, slope: float) -> nn.Module:
    """A copy of ``critic`` with nn.Conv2d / nn.LeakyReLU (nn.ReLU) in place of distgan's."""
    from distgan.models import double_backward

    theirs = copy.deepcopy(critic)
    for name, module in theirs.features.named_children():
        if isinstance(module, double_backward.Conv2d):
            plain = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size,
                              module.stride, module.padding)  # fmt: skip
            plain.load_state_dict(module.state_dict())
            setattr(theirs.features, name, plain)
        elif isinstance(module, double_backward.LeakyReLU):
            setattr(theirs.features, name, nn.LeakyReLU(slope) if slope else nn.ReLU())
    assert not any(type(m).__module__ == double_backward.__name__ for m in theirs.modules())
    return theirs.to(next(critic.parameters()).dtype)


def critic_loss_grads(critic: nn.Module, dtype: torch.dtype, penalty: bool) -> list[torch.Tensor]:
    """All parameter gradients of WGAN-GP's critic loss (float64, or fp32 under bf16 autocast)."""
    critic.zero_grad(set_to_none=True)
    real, fake = images(8, (3, 32, 32)).to(dtype), images(8, (3, 32, 32), seed=1).to(dtype)
    eps = torch.rand(8, generator=torch.Generator().manual_seed(2), dtype=dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.float32):
        loss = critic(fake).float().mean() - critic(real).float().mean()
        if penalty:
            loss = loss + 10 * penalties.gradient_penalty(critic, real, fake, eps)[0]
    loss.backward()
    return [p.grad.detach().clone() for p in critic.parameters()]


@pytest.mark.parametrize("slope", [0.2, 0.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "bf16-autocast"])
def test_cheap_double_backward_layers_give_pytorchs_gradients(slope, dtype) -> None:
    """distgan's critic layers (models/double_backward.py) against nn's: in float64 the plain
    passes bit for bit and the penalty's gradients to float64 precision; bf16 to its rounding."""
    ours = small_critic().to(dtype)
    for module in ours.modules():
        if hasattr(module, "slope"):
            module.slope = slope
    theirs = with_pytorchs_layers(ours, slope)
    for penalty in (False, True):
        reference = critic_loss_grads(theirs, dtype, penalty)
        assert all(g.abs().sum() > 0 for g in reference[:-1])  # the head's bias cancels out
        for mine, theirs_grad in zip(
            critic_loss_grads(ours, dtype, penalty), reference, strict=True
        ):
            if dtype == torch.float64 and not penalty:
                assert torch.equal(mine, theirs_grad)
            elif dtype == torch.float64:
                torch.testing.assert_close(mine, theirs_grad, rtol=1e-9, atol=1e-12)
            elif theirs_grad.any():  # bf16: each pass's gradient summed in fp32 here, bf16 there
                assert relative_error(mine, theirs_grad) < 2e-2


# Stated tolerances (relative L2 error against fp32): bf16 keeps 8 bits of mantissa, fp16 11.
# Measured here: bf16 penalty 1.2e-4, weight gradients ≤ 3.8e-2; fp16 7e-5 and ≤ 2.6e-2.
BF16_PENALTY_RTOL, BF16_GRAD_RTOL = 2e-2, 5e-2
FP16_PENALTY_RTOL, FP16_GRAD_RTOL = 5e-3, 5e-2


def test_bf16_penalty_and_gradients_agree_with_fp32() -> None:
    critic = small_critic()
    gp32, grads32 = penalty_and_grads(critic, None)
    gp16, grads16 = penalty_and_grads(critic, torch.bfloat16)
    assert gp32.item() > 0.1  # a penalty worth comparing
    assert relative_error(gp16, gp32) < BF16_PENALTY_RTOL
    for g16, g32 in zip(grads16, grads32, strict=True):
        assert torch.isfinite(g16).all()
        assert relative_error(g16, g32) < BF16_GRAD_RTOL


def test_fp16_penalty_scales_then_unscales() -> None:
    """PyTorch's AMP gradient-penalty recipe, on CPU fp16 autocast with a real GradScaler."""
    critic = small_critic()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    gp32, grads32 = penalty_and_grads(critic, None)
    gp16, grads16 = penalty_and_grads(critic, torch.float16, scaler)
    assert relative_error(gp16, gp32) < FP16_PENALTY_RTOL
    for g16, g32 in zip(grads16, grads32, strict=True):
        assert relative_error(g16, g32) < FP16_GRAD_RTOL

    # Why scale: a critic with small input gradients (~1e-9) loses them all in fp16 …
    with torch.no_grad():
        for p in critic.parameters():
            p.mul_(0.05)
    x = images(8, (3, 32, 32)).requires_grad_(True)
    exact = penalties.input_gradients(critic(x), x)
    with torch.autocast("cpu", dtype=torch.float16):
        plain = penalties.input_gradients(critic(x), x)
        scaled = penalties.input_gradients(critic(x), x, scaler)
    assert (plain == 0).all()
    # … and keeps them when taken of the scaled output, then unscaled in fp32.
    assert scaled.dtype == torch.float32 and relative_error(scaled, exact) < 2e-2


def test_fp16_unscale_arithmetic() -> None:
    """The input gradient is taken of the output scaled by scale/batch, then unscaled exactly."""
    torch.manual_seed(0)
    critic = Linear(48).float()
    x = images().requires_grad_(True)
    for scale in (1.0, 2.0**16, 2.0**24):
        scaler = torch.amp.GradScaler("cpu", init_scale=scale)
        grad = penalties.input_gradients(critic(x), x, scaler)
        assert grad.dtype == torch.float32
        torch.testing.assert_close(grad, critic.w.detach().float().expand(6, -1).view_as(x))


def test_fp16_overflow_is_skipped_and_counted() -> None:
    """An inf penalty gives inf gradients: the step is skipped, counted, and the scale halved."""
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    precision = Precision("no", torch.device("cpu"), ["D"])
    precision.scalers["D"] = torch.amp.GradScaler("cpu", init_scale=1024.0)  # as under fp16
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(torch.ones(2, 3)).sum() * torch.tensor(float("inf"))
    precision.backward(loss, "D")
    assert not precision.step([optimizer], "D")  # a device flag: no host sync in the step
    assert precision.skipped_steps == 1 and precision.scalers["D"].get_scale() == 512.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    optimizer.zero_grad()
    precision.backward(model(torch.ones(2, 3)).sum(), "D")
    assert precision.step([optimizer], "D") and precision.skipped_steps == 1


# --------------------------------------------------------------------------- 3. DDP


@pytest.mark.slow
def test_ddp_critic_gradients_with_penalty_equal_single_process(tmp_path: Path) -> None:
    out = tmp_path / "ddp.json"
    env = {**env_for_tests(), "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(ROOT)}
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2"]
    cmd += [str(ROOT / "tests" / "ddp_penalty_check.py"), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())
    assert set(results) == {
        "wgangp",
        "sagan+gp+r1",
        "G through reused fakes",
        "stylegan2 R1",
        "stylegan2 path length",
    }
    for case, result in results.items():
        # float64: one process vs 2 ranks differ only by summation order.
        assert result["max_relative_error"] < 1e-12, (case, result)
        assert all(v > 0 for v in result["penalties"].values()), (case, result)


# --------------------------------------------------------------------------- 4. schedule


def recipe_for(name: str, *overrides: str):
    cfg = load_recipe(name, list(overrides))
    info = DatasetInfo(32, 1 if name.startswith("digits") else 3, [str(i) for i in range(10)], 9)
    family = build_family(cfg, {"": info})
    torch.manual_seed(0)
    return family, family.build_networks()


TINY_WGAN = ("model.g_channels=[16,8,8]", "model.d_channels=[8,8,8]", "model.z_dim=8")


@pytest.mark.parametrize("penalty", ["gp", "r1"])
def test_lazy_regularization_runs_every_kth_step_with_gain_k(penalty: str) -> None:
    k = 4
    weight = ["loss.gp_weight=10"] if penalty == "gp" else ["loss.gp_weight=0", "loss.r1_gamma=2"]
    recipe, models = recipe_for("digits-wgangp", *TINY_WGAN, *weight, f"loss.reg_every={k}")
    plain, _ = recipe_for("digits-wgangp", *TINY_WGAN, "loss.gp_weight=0")
    batch = {"image": images(4, (1, 32, 32)).clamp(-1, 1)}
    ran = []
    for step in range(2 * k + 1):
        nets = Nets({"G": models["G"].eval(), "D": models["D"]})
        ctx = StepContext(torch.device("cpu"), torch.Generator().manual_seed(step)).enter(
            step, None
        )
        loss, logs = recipe.d_loss(nets, batch, ctx)
        ctx_plain = StepContext(torch.device("cpu"), torch.Generator().manual_seed(step))
        plain_loss, _ = plain.d_loss(nets, batch, ctx_plain.enter(step, None))
        key = "D/gp" if penalty == "gp" else "D/r1"
        if key in logs:
            ran.append(step)
            gain = 10.0 if penalty == "gp" else 2.0 / 2
            torch.testing.assert_close(loss - plain_loss, k * gain * logs[key])
        else:
            torch.testing.assert_close(loss, plain_loss, rtol=0, atol=0)
    assert ran == [0, k, 2 * k]
    assert [penalties.lazy_gain(s, k) for s in range(5)] == [k, 0, 0, 0, k]


def test_n_critic_and_ttur() -> None:
    recipe, _ = recipe_for("digits-wgangp", *TINY_WGAN)
    schedule = [(p.name, p.trains, p.every) for p in recipe.phases]
    assert schedule == [("D", ("D",), 1), ("G", ("G",), 5)]
    # 10 engine steps: 10 critic steps, 2 generator steps
    assert sum(s % 5 == 0 for s in range(10)) == 2
    sagan = load_recipe("cifar10-sagan")
    assert sagan.optimizer("D").lr == 4e-4 and sagan.optimizer("G").lr == 1e-4
    assert sagan.optimizer("D").betas == (0.0, 0.9)
    shorthand = load_recipe("cifar10-sagan", ["train.lr_d=3e-4"])  # the documented shorthand
    assert shorthand.optimizer("D").lr == 3e-4 and shorthand.optimizer("D").betas == (0.0, 0.9)


# --------------------------------------------------------------------------- compile


def test_penalty_with_compiled_plain_passes_matches_eager() -> None:
    """Double backward through a compiled module is unsupported; the recipe compiles only the
    plain passes and takes the penalty through the eager module: same gradients as eager."""
    critic = small_critic()
    compiled = torch.compile(copy.deepcopy(critic), backend="aot_eager")
    x = images(2, (3, 32, 32)).requires_grad_(True)
    with pytest.raises(RuntimeError, match="double backward"):
        (grad,) = torch.autograd.grad(compiled(x).sum(), x, create_graph=True)
        grad.pow(2).sum().backward()

    recipe, _ = recipe_for("digits-wgangp", *TINY_WGAN)
    torch.manual_seed(0)
    models = recipe.build_networks()
    batch = {"image": images(4, (1, 32, 32))}
    grads, contexts = [], []
    for backend in (None, "aot_eager"):  # train.compile off / on (inductor would build C++ here)
        D = copy.deepcopy(models["D"])
        ctx = StepContext(torch.device("cpu"), torch.Generator().manual_seed(0), backend)
        contexts.append(ctx.enter(0, None))
        loss, logs = recipe.d_loss(Nets({"G": models["G"].eval(), "D": D}), batch, ctx)
        loss.backward()
        assert logs["D/gp"] > 0
        grads.append([p.grad for p in D.parameters()])
    assert contexts[1]._compiled  # the plain passes did go through torch.compile
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- the losses


def test_adversarial_losses_values_and_saturation() -> None:
    zero = torch.zeros(4)
    none = (torch.ones(4), None)
    assert losses.ADVERSARIAL["hinge"].d(zero, zero, none).item() == 2.0
    assert losses.ADVERSARIAL["wasserstein"].d(zero + 3, zero + 1, none).item() == -2.0
    assert losses.ADVERSARIAL["lsgan"].d(zero + 1, zero, none).item() == 0.0
    assert losses.ADVERSARIAL["lsgan"].g(zero + 1).item() == 0.0
    log2 = torch.log(torch.tensor(2.0))
    for name in ("minimax", "nonsaturating"):
        torch.testing.assert_close(losses.ADVERSARIAL[name].d(zero, zero, none), 2 * log2)

    # A confident D (fake logit −10): minimax's G gradient vanishes, non-saturating's does not.
    def g_grad(name: str) -> float:
        logit = torch.full((1,), -10.0, requires_grad=True)
        losses.ADVERSARIAL[name].g(logit).backward()
        return logit.grad.abs().item()

    assert g_grad("minimax") < 1e-4 < 0.99 < g_grad("nonsaturating")


def test_d_targets_smoothing_noise_flip() -> None:
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()

    def rand(n: int) -> torch.Tensor:
        return torch.rand(n, generator=generator)

    real, fake = losses.d_targets(1000, torch.device("cpu"), rand, real_label=0.9)
    assert fake is None and (real == 0.9).all()
    assert torch.equal(generator.get_state(), state)  # no hack, no random draw
    real, fake = losses.d_targets(1000, torch.device("cpu"), rand, 0.9, noise=0.1)
    assert real.min() >= 0.8 and real.max() <= 0.9 and fake.min() >= 0 and fake.max() <= 0.1
    real, fake = losses.d_targets(1000, torch.device("cpu"), rand, flip=0.2)
    assert 0.15 < (real == 0).float().mean() < 0.25 and torch.equal(real + fake, torch.ones(1000))
