"""Image autoencoder networks: shapes, bounded output, gradients everywhere, clear errors, and that they learn."""
import pytest
import torch

from dsls.nets import build_autoencoder


@pytest.fixture(autouse=True)
def one_thread():
    # tiny convs gain nothing from intra-op threads; on a busy machine 2 threads spin-wait ~40× slower than 1
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


CASES = [("conv", (1, 28, 28), 16, None), ("conv", (3, 32, 32), 16, None),
         ("resnet", (3, 64, 64), 8, (1, 2, 2, 4)), ("resnet", (3, 128, 128), 8, (1, 1, 2, 2, 4))]


@pytest.mark.parametrize("arch,shape,hidden,mult", CASES)
def test_shapes_range_and_gradients(arch, shape, hidden, mult):
    enc, dec = build_autoencoder(arch, shape, 32, hidden, 1, True, mult)
    x = torch.rand(2, *shape) * 2 - 1
    z = enc(x)
    y = dec(z)
    assert z.shape == (2, 32) and y.shape == (2, *shape) and y.abs().max() <= 1
    ((y - x) ** 2).mean().backward()
    for name, p in [*enc.named_parameters(), *dec.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_default_resnet_256():
    enc, dec = build_autoencoder("resnet", (3, 256, 256), 16, 4, 1, True)
    assert dec(enc(torch.zeros(1, 3, 256, 256))).shape == (1, 3, 256, 256)


def test_bad_sizes_name_the_fix():
    with pytest.raises(ValueError, match="arch=resnet"):
        build_autoencoder("conv", (3, 64, 64), 8, 8, 1, True)
    with pytest.raises(ValueError, match="channel_mult of length"):
        build_autoencoder("resnet", (3, 256, 256), 8, 8, 1, True, (1, 2))
    with pytest.raises(ValueError, match="length 1–4"):  # would shrink 32 px below 1 px
        build_autoencoder("conv", (3, 32, 32), 8, 8, 1, True, (1, 2, 4, 8, 8))
    with pytest.raises(ValueError, match="4 or 8 times a power of two"):  # no multiplier count fits 100 px
        build_autoencoder("resnet", (3, 100, 100), 8, 8, 1, True)
    with pytest.raises(ValueError, match="unknown arch"):
        build_autoencoder("vit", (3, 32, 32), 8, 8, 1, True)


@pytest.mark.parametrize("arch,shape,mult", [("conv", (3, 32, 32), (1, 2)), ("resnet", (3, 64, 64), (1, 2, 2, 4))])
def test_any_base_width_and_channel_mult(arch, shape, mult):
    # GroupNorm groups must divide every width: hidden=36 gives 144 channels (not divisible by 32), hidden=3 gives 3
    for hidden in (36, 3):
        enc, dec = build_autoencoder(arch, shape, 8, hidden, 1, False, mult)
        assert dec(enc(torch.zeros(1, *shape))).shape == (1, *shape)


def test_conv_autoencoder_learns():
    torch.manual_seed(0)
    enc, dec = build_autoencoder("conv", (3, 32, 32), 16, 16, 1, True)
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    # lr 1e-3 halves the loss by step ~60 on every seed tried (ends ~0.26×); 3e-3+ stalls at the mean image
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], 1e-3)
    losses = []
    for _ in range(100):
        loss = ((dec(enc(x)) - x) ** 2).mean()
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_cifar_default_size():
    enc, dec = build_autoencoder("conv", (3, 32, 32), 64, 64, 1, True)
    n = sum(p.numel() for m in (enc, dec) for p in m.parameters())
    assert 0.5e6 < n < 10e6
