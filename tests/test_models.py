"""Networks: self-attention, spectral norm, conditional BatchNorm, and the layer tables of the
seed's networks, the ResNet (SNGAN/SAGAN) and DCGAN families."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distgan.models.dcgan import DCGANDiscriminator, DCGANGenerator
from distgan.models.layers import ConditionalBatchNorm2d, SelfAttention, sigma_max
from distgan.models.mlp import MLPDiscriminator, MLPGenerator
from distgan.models.resnet import ResNetDiscriminator, ResNetGenerator
from distgan.models.wgan import WGANCritic, WGANGenerator


def test_self_attention_is_identity_at_init_and_has_the_right_shapes() -> None:
    torch.manual_seed(0)
    block = SelfAttention(32)
    x = torch.randn(2, 32, 8, 4)
    assert block.gamma.item() == 0.0
    assert torch.equal(block(x), x)  # γ = 0: exactly the identity
    attention = block.attention(x)
    assert attention.shape == (2, 32, 32)  # B × N × N, N = H·W
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 32))
    assert block.theta.weight.shape == (4, 32, 1, 1) and block.phi.weight.shape == (4, 32, 1, 1)
    assert block.g.weight.shape == (16, 32, 1, 1) and block.o.weight.shape == (32, 16, 1, 1)
    with torch.no_grad():
        block.gamma.fill_(1.0)
    out = block(x)
    assert out.shape == x.shape and not torch.allclose(out, x)
    # every position attends to all others: changing one pixel changes the output everywhere
    y = x.clone()
    y[:, :, 0, 0] += 1
    assert ((block(y) - out)[:, :, 4:, 2:].abs() > 0).any()


def spectral_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if hasattr(m, "parametrizations")]


@pytest.mark.parametrize("which", ["D", "G"])
def test_spectral_norm_gives_sigma_max_one_after_power_iterations(which: str) -> None:
    torch.manual_seed(0)
    if which == "D":  # SN everywhere, incl. self-attention and the projection embedding
        net = ResNetDiscriminator(32, 3, [32, 32, 32, 32], num_classes=10, attention=[16])
        net(torch.randn(4, 3, 32, 32), torch.randint(10, (4,)))
    else:
        net = ResNetGenerator(16, 32, 3, [32, 32, 32, 32], attention=[16], spectral_norm=True)
        net(torch.randn(4, 16))
    layers = [m for m in net.modules() if hasattr(m, "parametrizations")]
    assert len(layers) >= 12
    with torch.no_grad():
        for _ in range(100):  # each training-mode weight access = one power iteration
            for m in layers:
                m.weight  # noqa: B018
    sigmas = [sigma_max(m) for m in layers]
    assert max(abs(s - 1) for s in sigmas) < 1e-2, sigmas
    net.eval()  # eval: the stored estimate, no further iteration
    assert max(abs(sigma_max(m) - 1) for m in layers) < 1e-2


def test_conditional_batchnorm_starts_as_batchnorm() -> None:
    torch.manual_seed(0)
    cbn, bn = ConditionalBatchNorm2d(8, 10), nn.BatchNorm2d(8)
    x, y = torch.randn(6, 8, 4, 4), torch.randint(10, (6,))
    torch.testing.assert_close(cbn(x, y), bn(x))
    with torch.no_grad():
        cbn.scale.weight[3].fill_(2.0)
    assert torch.equal(cbn(x, torch.full((6,), 3)), 2 * cbn.bn(x))


def test_seed_wgangp_networks_are_the_seed_table() -> None:
    G, D = WGANGenerator(), WGANCritic()
    assert G.dense.out_features == 4 * 4 * 512
    convs = [m for m in G.net if isinstance(m, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [256, 128, 64, 3]
    assert all(c.kernel_size == (5, 5) and c.stride == (2, 2) for c in convs)
    kinds = [type(m).__name__ for m in G.net]
    assert kinds == ["ConvTranspose2d", "BatchNorm2d", "LeakyReLU"] * 3 + ["ConvTranspose2d"]
    convs = [m for m in D.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512]
    assert all(c.kernel_size == (5, 5) and c.stride == (2, 2) for c in convs)
    kinds = {type(m).__name__ for m in D.modules()}
    assert not kinds & {"BatchNorm2d", "Dropout", "Tanh", "Sigmoid"}
    assert D.head.in_features == 512 * 4 * 4 and D.head.out_features == 1
    x = G(torch.randn(3, 100))
    assert x.shape == (3, 3, 64, 64) and D(x).shape == (3,)
    # kernel 4 (divisible by the stride) keeps the sizes
    G4 = WGANGenerator(kernel_size=4, output="tanh")
    assert G4(torch.randn(2, 100)).shape == (2, 3, 64, 64)
    assert WGANCritic(kernel_size=4)(torch.randn(2, 3, 64, 64)).shape == (2,)
    with pytest.raises(ValueError, match="32 px"):
        WGANGenerator(resolution=32)


def test_mlp_baseline_is_the_seed_table() -> None:
    G, D = MLPGenerator(), MLPDiscriminator()
    assert G.dense[0].out_features == 4096 and isinstance(G.dense[2], nn.BatchNorm1d)
    assert G.conv1.out_channels == 128 and G.conv2.out_channels == 3
    linears = [m for m in D.net if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [512, 256, 1]
    assert linears[0].in_features == 64 * 64 * 3
    assert G(torch.randn(2, 100)).shape == (2, 3, 64, 64)


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_resnet_shapes(resolution: int) -> None:
    stages = {32: 4, 64: 5, 128: 6}[resolution]
    G = ResNetGenerator(8, resolution, 3, [16] * stages, num_classes=10, attention=[32])
    D = ResNetDiscriminator(resolution, 3, [16] * stages, num_classes=10, attention=[32])
    assert sum(isinstance(m, SelfAttention) for m in G.modules()) == 1
    assert sum(isinstance(m, SelfAttention) for m in D.modules()) == (resolution > 32)
    y = torch.randint(10, (2,))
    x = G(torch.randn(2, 8), y)
    assert x.shape == (2, 3, resolution, resolution) and D(x, y).shape == (2,)
    with pytest.raises(ValueError, match="pass a label"):
        G(torch.randn(2, 8))


def test_dcgan_defaults_unchanged_and_hacks() -> None:
    G, D = DCGANGenerator(64, 32, 1, 8, 10, 8), DCGANDiscriminator(32, 1, 8, 10)
    keys = [(k, tuple(v.shape)) for k, v in G.state_dict().items() if "weight" in k]
    assert keys[:2] == [("embed.weight", (10, 8)), ("net.0.weight", (72, 32, 4, 4))]
    assert isinstance(G.net[-1], nn.Tanh)
    assert [type(m).__name__ for m in D.features][:2] == ["Conv2d", "LeakyReLU"]
    z, y = torch.randn(2, 64), torch.randint(10, (2,))
    for k in (4, 5, 6):
        Gk = DCGANGenerator(64, 32, 1, 8, 10, 8, kernel_size=k, output="linear")
        Dk = DCGANDiscriminator(32, 1, 8, 10, kernel_size=k, dropout=0.3)
        assert not isinstance(Gk.net[-1], nn.Tanh)
        assert sum(isinstance(m, nn.Dropout) for m in Dk.modules()) == 3
        x = Gk(z, y)
        assert x.shape == (2, 1, 32, 32) and Dk(x, y).shape == (2,)


def test_fast_dropout_is_dropout() -> None:
    """layers.Dropout: zeroes a fraction p, scales the rest by 1/(1-p) (also in the gradient),
    is the identity in eval mode, and draws from the global RNG (so exact resume holds)."""
    from distgan.models.layers import Dropout

    x = torch.ones(200_000, requires_grad=True)
    drop = Dropout(0.3)
    torch.manual_seed(0)
    y = drop(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.3) < 0.005
    assert torch.allclose(y[kept], torch.tensor(1 / 0.7))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x·mask/(1-p))/dx = mask/(1-p)
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)
    assert drop.eval()(x) is x
    bf16 = drop.train()(torch.ones(1000, dtype=torch.bfloat16))
    assert bf16.dtype == torch.bfloat16
    odd = drop(torch.ones(3, 5, 7_001))  # element count not a multiple of 4: mask lanes sliced
    assert odd.shape == (3, 5, 7_001) and abs((odd == 0).float().mean().item() - 0.3) < 0.01
