"""Phase 2's peers (issue 18): NCP-VAE's D (noise_conditional=False) and discriminator guidance's D_g (fake_ckpt, a
latent_score checkpoint whose samples are D_g's fakes)."""
import dsls  # noqa: F401  (before torch: OMP_WAIT_POLICY)

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny_trainer
from dsls.errors import ConfigError
from dsls.nets import NoiseConditionalDiscriminator
from dsls.noise import SigmaLadder
from dsls.phases.adversarial import AdversarialModule, ratio_loss
from dsls.score import GaussianMixture


def _toy_data(**kw):
    from dsls.data import Toy2DDataModule

    return Toy2DDataModule(train_size=1024, batch_size=128, **kw)


# -- NCP-VAE's D -----------------------------------------------------------------------------------------------------
def test_ncp_discriminator_sees_sigma_min_only_and_loads_as_one_level(toy_ae_ckpt, tmp_path):
    model = AdversarialModule(autoencoder_ckpt=toy_ae_ckpt, d_hidden=16, d_depth=1, noise_conditional=False)
    seen = []
    model.discriminator.register_forward_pre_hook(lambda mod, args: seen.append(args[1].detach().clone()))
    t = make_tiny_trainer(max_steps=4, limit_val_batches=1)
    t.fit(model, datamodule=_toy_data())
    assert sum(map(len, seen)) == 4 * 2 * 128  # every training step's codes and fakes
    t.validate(model, datamodule=_toy_data(), verbose=False)
    sigmas = torch.cat(seen)
    assert len(sigmas) > 4 * 2 * 128  # and validation's
    assert torch.all(sigmas == torch.tensor(model.hparams.sigma_min)), sigmas.unique()[:10]
    path = tmp_path / "ncp.ckpt"
    t.save_checkpoint(path)
    loaded = dsls.load(path)
    assert loaded.ladder.num_levels == 1
    assert loaded.ladder.sigmas.tolist() == pytest.approx([model.hparams.sigma_min])
    x = loaded.sample(8, "langevin", steps_per_level=3)
    assert x.shape == (8, 2) and torch.isfinite(x).all()


def test_noise_conditional_default_sees_the_ladder(toy_ae_ckpt):
    """The spy above can fail: D's default training draws σ's across the ladder."""
    model = AdversarialModule(autoencoder_ckpt=toy_ae_ckpt, d_hidden=16, d_depth=1, sigma_max=2.0)
    z = torch.randn(256, 2)
    _, sigma, _ = model.noisy(z)
    assert sigma.unique().numel() > 100 and model.ladder.num_levels == model.hparams.num_levels


@pytest.mark.parametrize("settings, words", [
    ({"noise_conditional": False, "mode": "joint"}, "drop --model.mode=joint"),
    ({"fake_ckpt": "x.ckpt", "noise_conditional": False}, "drop --model.noise_conditional=false"),
    ({"fake_ckpt": "x.ckpt", "mode": "joint", "score_matching_weight": 0.0}, "drop --model.mode=joint"),
    ({"fake_ckpt": "x.ckpt"}, "--model.score_matching_weight=0"),
])
def test_peer_settings_that_make_no_sense_are_refused(settings, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        AdversarialModule(**settings)  # refused before any checkpoint is read


# -- D_g against a known wrong distribution, with the module's own loss --------------------------------------------
def _mixture(scale: float = 1.0, std: float = 0.3) -> GaussianMixture:
    means = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) * 1.5 * scale
    return GaussianMixture(means, torch.full((4,), std**2))


def _train_dg(real: GaussianMixture, fake: GaussianMixture, steps: int) -> NoiseConditionalDiscriminator:
    """D_g trained by ratio_loss (AdversarialModule.d_loss's loss) on real samples against fresh `fake` samples, both
    noised on a ladder as phase 2 noises them."""
    torch.manual_seed(0)
    D = NoiseConditionalDiscriminator(2, 64, 2, 32)
    D.code_var.fill_(float(real.sample(4096).var(0).mean()))
    ladder = SigmaLadder(3.0, 0.05, 10)

    def noisy(z):
        sigma, noise = ladder.sample(len(z), "lowbiased"), torch.randn_like(z)
        return z + sigma[:, None] * noise, sigma, noise

    opt = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.9, 0.99))
    for _ in range(steps):
        loss, _ = ratio_loss(D, noisy, real.sample(256), lambda z: fake.sample(len(z)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return D


def _grad(f, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    z = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(z, sigma).sum(), z)
    return g


def test_dg_discriminator_gradient_points_from_the_wrong_score_to_the_exact_one():
    real, wrong = _mixture(), _mixture(scale=1.2, std=0.35)  # a wrong s_θ: modes too far out and too wide
    g = torch.Generator().manual_seed(123)
    sigma = 0.1  # small: where the search ends
    held_out = torch.cat([real.sample(500, generator=g), wrong.sample(500, generator=g)])
    held_out = held_out + sigma * torch.randn(held_out.shape, generator=g)
    s = torch.full((len(held_out),), sigma)
    correction = _grad(lambda z, s: real.log_prob(z, s) - wrong.log_prob(z, s), held_out, s)  # s_exact − s_wrong

    def cosine(D):
        return float(F.cosine_similarity(_grad(D, held_out, s), correction, dim=1).mean())

    untrained, against_wrong = _train_dg(real, wrong, 0), _train_dg(real, wrong, 200)
    against_exact = _train_dg(real, real, 200)
    norm = lambda D: float(_grad(D, held_out, s).norm(dim=1).mean())  # noqa: E731
    print(f"cosine: trained {cosine(against_wrong):.3f}, untrained {cosine(untrained):.3f}; gradient norm against the "
          f"exact distribution / against the wrong one: {norm(against_exact) / norm(against_wrong):.4f}")
    assert cosine(against_wrong) > 0.5
    assert cosine(untrained) < 0.5
    assert norm(against_exact) < 0.2 * norm(against_wrong)


# -- discriminator guidance end to end on the toy autoencoder --------------------------------------------------------
@pytest.fixture(scope="module")
def dg_phases(toy_ae_ckpt, tmp_path_factory):
    """A latent_score checkpoint (5 steps) and a phase-2 D_g checkpoint trained against its samples (5 steps)."""
    from dsls.phases.latent_score import LatentScoreModule

    d = tmp_path_factory.mktemp("dg")
    torch.manual_seed(0)
    t = make_tiny_trainer(max_steps=5)
    t.fit(LatentScoreModule(autoencoder_ckpt=toy_ae_ckpt, s_hidden=16, s_depth=1), datamodule=_toy_data())
    t.save_checkpoint(d / "ls.ckpt")

    class KeepFakes(L.Callback):
        def on_train_end(self, trainer, module):
            self.fakes = module.fakes.clone()

    keep = KeepFakes()
    model = AdversarialModule(autoencoder_ckpt=toy_ae_ckpt, fake_ckpt=str(d / "ls.ckpt"), d_hidden=16, d_depth=1,
                              score_matching_weight=0.0)
    t = make_tiny_trainer(max_steps=5, callbacks=[keep], limit_val_batches=1)
    t.fit(model, datamodule=_toy_data())
    t.save_checkpoint(d / "dg.ckpt")
    return {"ls": str(d / "ls.ckpt"), "dg": str(d / "dg.ckpt"), "fakes": keep.fakes, "model": model}


def test_dg_checkpoint_holds_its_score_network_and_samples(dg_phases):
    from dsls.phases.fakes import draw_fakes
    from dsls.priors import GuidedScorePrior

    ls = torch.load(dg_phases["ls"], weights_only=True)
    dg = torch.load(dg_phases["dg"], weights_only=True)
    ema = {k[len("ema.module."):]: v for k, v in ls["state_dict"].items() if k.startswith("ema.module.")}
    mine = {k[len("fake_score_net."):]: v for k, v in dg["state_dict"].items() if k.startswith("fake_score_net.")}
    assert ema and mine.keys() == ema.keys()
    assert all(torch.equal(mine[k], ema[k]) for k in ema)
    fake_net = dg["hyper_parameters"]["fake_net"]
    assert fake_net["latent_dim"] == 2 and fake_net["hidden"] == 16 and fake_net["depth"] == 1
    assert fake_net["sigma_max"] == pytest.approx(float(ls["state_dict"]["sigma_max"]))
    assert float(dg["state_dict"]["sigma_max"]) == pytest.approx(fake_net["sigma_max"])  # D_g on s_θ's ladder

    # the fakes: one per training code, drawn again the same (as a resumed fit draws them), not prior draws
    fakes, model = dg_phases["fakes"], dg_phases["model"]
    assert fakes.shape == (1024, 2)
    assert torch.equal(fakes, draw_fakes(model.fake_score_net, fake_net, 1024))
    assert not torch.allclose(fakes[:8], torch.randn(8, 2), atol=0.5)

    loaded = dsls.load(dg_phases["dg"])
    assert isinstance(loaded.prior, GuidedScorePrior)
    z, sigma = torch.randn(16, 2), 0.2
    s_theta = model.fake_score_net(z, torch.full((16,), sigma))
    guided = s_theta + _grad(model.discriminator, z, torch.full((16,), sigma))
    assert torch.allclose(loaded.score(z, sigma), guided, atol=1e-5)
    assert torch.allclose(model.score_fn()(z, sigma), guided, atol=1e-5)  # the figures' score during training
    x = loaded.sample(8, "ode", method="heun2", steps=4)
    assert x.shape == (8, 2) and torch.isfinite(x).all()


def test_dg_fakes_are_rows_of_the_drawn_samples(dg_phases):
    model = dg_phases["model"]
    model.fakes = torch.arange(20.0).view(10, 2)
    try:
        rows = model.fake_like(torch.zeros(64, 2))
    finally:
        model.fakes = None
    assert rows.shape == (64, 2) and torch.all(rows[:, 1] == rows[:, 0] + 1) and torch.all(rows[:, 0] % 2 == 0)
    assert rows[:, 0].unique().numel() > 5  # drawn at random, not one row


def test_dg_refuses_a_score_network_of_another_autoencoder(dg_phases, toy_ae_ckpt, tmp_path):
    ck = torch.load(dg_phases["ls"], weights_only=True)
    key = next(k for k in ck["state_dict"] if k.startswith("autoencoder.") and ck["state_dict"][k].is_floating_point())
    ck["state_dict"][key] = ck["state_dict"][key] + 0.1
    other = tmp_path / "other-ls.ckpt"
    torch.save(ck, other)
    with pytest.raises(ConfigError, match="another autoencoder") as e:
        AdversarialModule(autoencoder_ckpt=toy_ae_ckpt, fake_ckpt=str(other), score_matching_weight=0.0)
    assert str(other) in str(e.value) and toy_ae_ckpt in str(e.value)


def test_dg_refuses_a_checkpoint_that_is_not_a_latent_score_one(toy_ae_ckpt, toy_adv_ckpt):
    from dsls.errors import PhaseCheckpointError

    with pytest.raises(PhaseCheckpointError, match=r"--model\.fake_ckpt=.*is an adversarial.*needs a latent_score"):
        AdversarialModule(autoencoder_ckpt=toy_ae_ckpt, fake_ckpt=toy_adv_ckpt, score_matching_weight=0.0)
