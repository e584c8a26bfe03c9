"""The latent score phase (the latent DSM peer of D): DSM learns an exact mixture score, the phase fits on cached codes,
its checkpoint loads with dsls.load and samples with every sampler and through `dsls predict`; discriminator guidance
adds w · ∇ logit D_g to a score network."""
import inspect
import json

import numpy as np
import pytest
import torch
import yaml

import dsls
from dsls.errors import TaskError, user_error
from dsls.losses import dsm
from dsls.model import LatentModel
from dsls.nets import NoiseConditionalDiscriminator
from dsls.noise import LATENT_LADDER, SigmaLadder
from dsls.phases.adversarial import AdversarialModule
from dsls.phases.latent_score import LatentScoreModule, latent_score_net
from dsls.phases.schedules import cosine
from dsls.priors import DG_SCALE, GuidedScorePrior, ScorePrior
from dsls.score import GaussianMixture, Score

DATASETS = ("toy", "digits", "tinted_digits", "mnist", "cifar10", "celebahq256", "lsun_church")


# -- the score network learns the score ---------------------------------------------------------------------------
def exact_score(mixture: GaussianMixture, z: torch.Tensor, sigma: float) -> torch.Tensor:
    z = z.clone().requires_grad_(True)
    return torch.autograd.grad(mixture.log_prob(z, sigma).sum(), z)[0]


def relative_errors(net, mixture: GaussianMixture, sigmas=(LATENT_LADDER.sigma_min, 0.05, 0.1)) -> dict:
    """‖s_θ − s*‖ / ‖s*‖ over a batch of held-out points of q_σ, per σ ≤ 0.1."""
    g, out = torch.Generator().manual_seed(123), {}
    for sigma in sigmas:
        z = mixture.sample(2000, generator=g) + sigma * torch.randn(2000, 2, generator=g)
        with torch.no_grad():
            s = net(z, torch.full((len(z),), sigma))
        exact = exact_score(mixture, z, sigma)
        out[sigma] = float((s - exact).norm() / exact.norm())
    return out


def test_latent_dsm_learns_the_exact_score_of_a_gaussian_mixture():
    """400 Adam steps of σ²-weighted DSM on draws of a 4-mode mixture: within 0.2 of the exact score at every σ ≤ 0.1
    (measured 0.08-0.12 over seeds); the untrained net is far off (≈ 1)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    mixture = GaussianMixture(torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]]),
                              torch.full((4,), 0.1**2))
    codes = mixture.sample(20000, generator=g)
    net = latent_score_net(2, hidden=128, depth=2, embed_dim=32)
    net.data_var.fill_(float(codes.var(0).mean()))
    untrained = relative_errors(net, mixture)
    assert min(untrained.values()) > 0.5, untrained

    ladder, steps = SigmaLadder(1.0, LATENT_LADDER.sigma_min, LATENT_LADDER.num_levels), 400
    opt = torch.optim.Adam(net.parameters(), lr=5e-3, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: cosine(step, 0, steps))
    for _ in range(steps):
        z = codes[torch.randint(len(codes), (1024,), generator=g)]
        sigma = ladder.sample(len(z), LATENT_LADDER.sigma_sampling, generator=g)
        noise = torch.randn(z.shape, generator=g)
        loss = dsm(net(z + sigma[:, None] * noise, sigma), sigma, noise, reduction="sum")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    trained = relative_errors(net, mixture)
    assert max(trained.values()) <= 0.2, trained


# -- the phase: fit, checkpoint, dsls.load, samplers, predict -------------------------------------------------------
@pytest.fixture(scope="module")
def score_ckpt(toy_ae_ckpt, tiny_trainer, tmp_path_factory):
    """A tiny latent_score checkpoint on the toy autoencoder (5 steps), and its module."""
    from dsls.data import Toy2DDataModule

    torch.manual_seed(0)
    module = LatentScoreModule(autoencoder_ckpt=toy_ae_ckpt, s_hidden=16, s_depth=1, s_embed_dim=8)
    trainer = tiny_trainer(max_steps=5)
    trainer.fit(module, datamodule=Toy2DDataModule(train_size=1024, batch_size=128))
    path = tmp_path_factory.mktemp("latent-score") / "last.ckpt"
    trainer.save_checkpoint(path)
    return {"path": str(path), "module": module}


def test_the_phase_trains_with_an_ema_whose_weights_another_phase_can_rebuild(score_ckpt):
    module = score_ckpt["module"]
    ck = torch.load(score_ckpt["path"], map_location="cpu", weights_only=True)
    assert ck["dsls_phase"] == "latent_score" and ck["dsls_dataset"] == "grid25"
    assert module.num_parameters == sum(p.numel() for p in module.score_net.parameters()) > 0
    # the trained weights moved; the EMA (decay 0.999) is still near the start, and both read the codes' variance
    assert not torch.equal(module.score_net.out.weight, module.ema.module.out.weight)
    assert module.score_net.data_var.item() == module.ema.module.data_var.item() != 1.0
    # another phase rebuilds s_θ from the hyper-parameters and the ema.module.* weights alone
    hp = ck["hyper_parameters"]
    net = latent_score_net(module.autoencoder.latent_dim, hp["s_hidden"], hp["s_depth"], hp["s_embed_dim"])
    net.load_state_dict({k[len("ema.module."):]: v for k, v in ck["state_dict"].items()
                         if k.startswith("ema.module.")})
    z, sigma = torch.randn(6, 2), torch.full((6,), 0.3)
    torch.testing.assert_close(net(z, sigma), module.sampling_net(z, sigma))


def test_the_fit_prints_the_parameter_count(toy_ae_ckpt, tiny_trainer, capsys):
    from dsls.data import Toy2DDataModule

    module = LatentScoreModule(autoencoder_ckpt=toy_ae_ckpt, s_hidden=16, s_depth=1, s_embed_dim=8)
    tiny_trainer(max_steps=1).fit(module, datamodule=Toy2DDataModule(train_size=256, batch_size=128))
    assert f"latent score net: 0.00 M parameters ({module.num_parameters:,})" in capsys.readouterr().out


def test_dsls_load_gives_a_score_prior_that_every_sampler_samples(score_ckpt):
    model = dsls.load(score_ckpt["path"])
    assert isinstance(model, LatentModel) and isinstance(model.prior, ScorePrior) and model.discriminator is None
    z = torch.randn(8, 2)
    torch.testing.assert_close(model.score(z, 0.2), score_ckpt["module"].sampling_net(z, torch.full((8,), 0.2)))
    for sampler in ("langevin", "pc", "ode"):
        x = model.sample(8, sampler)
        assert x.shape == (8, 2) and torch.isfinite(x).all(), sampler
    with pytest.raises(TaskError, match=r"\(score network\) has no logit"):
        model.logit(z, 0.2)
    lp = model.log_prob(z)  # the probability-flow ODE's likelihood of a direct score
    assert lp.shape == (8,) and torch.isfinite(lp).all()


def test_predict_with_a_latent_score_checkpoint_writes_the_samples(score_ckpt, tmp_path):
    from dsls.cli import main

    args = ["predict", "--config", "configs/toy/search.yaml", f"--model.ckpt={score_ckpt['path']}",
            f"--run_dir={tmp_path}", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
            "--model.num_samples=16", "--model.batch_size=16",
            "--model.samplers={none: {}, langevin: {steps_per_level: 2}}"]
    with pytest.raises(Exception) as raised:  # the parser wraps what the search's __init__ raises
        main([*args, "--model.dg_scale=2.0"])
    assert "--model.dg_scale=2.0 weighs discriminator guidance, but this latent_score checkpoint has none (its prior is " \
           "a score network)" in str(user_error(raised.value, (TaskError,)))
    main(args)
    with np.load(tmp_path / "samples-langevin.npz") as f:
        assert f["x"].shape == (16, 2) and np.isfinite(f["x"]).all()
    assert {"none", "langevin"} <= set(json.loads((tmp_path / "results.json").read_text()))
    assert isinstance(dsls.load(tmp_path / "search.ckpt").prior, ScorePrior)  # the search.ckpt names its checkpoint


# -- discriminator guidance -----------------------------------------------------------------------------------------
def test_guided_score_prior_adds_w_times_the_gradient_of_the_logit():
    torch.manual_seed(0)
    net, disc = latent_score_net(3, 8, 1, 8), NoiseConditionalDiscriminator(3, hidden=8, depth=1, embed_dim=8)
    prior = GuidedScorePrior(net, disc)
    z, sigma = torch.randn(5, 3), torch.full((5,), 0.4)
    zg = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(zg, sigma).sum(), zg)
    assert grad.abs().max() > 0
    with torch.no_grad():
        s_theta = net(z, sigma)
    assert prior.scale == DG_SCALE
    for w in (DG_SCALE, 2.5, 0.0):
        prior.scale = w  # a plain attribute: the next score reads it
        torch.testing.assert_close(Score(*prior.score_terms())(z, sigma), s_theta + w * grad)
    torch.testing.assert_close(prior.logit(z, 0.4), disc(z, sigma))


def test_latent_parts_picks_the_prior_from_the_phase_2_module(toy_adv_ckpt):
    """Phase 2 with a score network for its fakes is discriminator guidance; without one, DS-LS's D. dg_scale
    applies to the first only."""
    from dsls.loading import latent_parts, load_phase_module
    from dsls.priors import DiscriminatorPrior

    module = load_phase_module(toy_adv_ckpt)
    assert isinstance(latent_parts(module)["prior"], DiscriminatorPrior)
    with pytest.raises(TaskError, match=r"dg_scale=2.0 .*its prior is a discriminator\): drop --model.dg_scale"):
        latent_parts(module, dg_scale=2.0)
    module.fake_score_net = latent_score_net(2, 8, 1, 8)
    prior = latent_parts(module, dg_scale=2.0)["prior"]
    assert isinstance(prior, GuidedScorePrior) and prior.scale == 2.0
    assert prior.score_net is module.fake_score_net and prior.discriminator is module.discriminator
    assert latent_parts(module)["prior"].scale == DG_SCALE


# -- the same budget and size as D ----------------------------------------------------------------------------------
def defaults(cls) -> dict:
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}


def test_the_defaults_are_ds_ladder_widths_and_depth():
    ours, d = defaults(LatentScoreModule), defaults(AdversarialModule)
    assert {k: ours[f"s_{k}"] for k in ("hidden", "depth", "embed_dim")} == {k: d[f"d_{k}"] for k in
                                                                            ("hidden", "depth", "embed_dim")}
    assert ours["lr_s"] == d["lr_d"]
    assert all(ours[k] == d[k] for k in ("sigma_max", "sigma_min", "num_levels", "sigma_sampling", "cache_codes"))


@pytest.mark.parametrize("dataset", DATASETS)
def test_each_config_has_ds_steps_batch_and_learning_rate(dataset):
    """The second-stage budget of the peer is D's: optimizer steps × batch, and its learning rate."""
    ours, d = (yaml.safe_load(open(f"configs/{dataset}/{p}.yaml")) for p in ("latent_score", "adversarial"))
    assert ours["trainer"] == d["trainer"] and ours["data"] == d["data"]
    init, d_init = ours["model"]["init_args"], d["model"]["init_args"]
    assert init.get("lr_s", defaults(LatentScoreModule)["lr_s"]) == d_init.get("lr_d", defaults(AdversarialModule)["lr_d"])
    for key in ("hidden", "depth", "embed_dim"):
        assert init.get(f"s_{key}", defaults(LatentScoreModule)[f"s_{key}"]) == \
            d_init.get(f"d_{key}", defaults(AdversarialModule)[f"d_{key}"]), key
