"""Phase 2 on cached codes, joint mode's D refit, and the CPU defaults (OpenMP wait policy, loader workers)."""
import os
import subprocess
import sys

import lightning as L
import numpy as np
import pytest
import torch

from dsls.data import Toy2DDataModule
from dsls.data.loaders import CodeRows, make_loader, usable_cpus
from dsls.errors import ConfigError
from dsls.metrics.toy import toy_metrics
from dsls.phases.adversarial import AdversarialModule
from dsls.phases.reconstruction import ReconstructionModule
from dsls.samplers import build_samplers, sample_indices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def toy(batch_size: int = 256) -> Toy2DDataModule:
    return Toy2DDataModule(train_size=8192, batch_size=batch_size, seed=1)


@pytest.fixture(scope="module")
def toy_ae(tiny_trainer, tmp_path_factory) -> str:
    """Not conftest's 5-step toy_ae_ckpt: the cached-codes test measures how well D searches, which needs codes that
    decode onto the modes."""
    L.seed_everything(0)
    t = tiny_trainer(max_steps=600)
    t.fit(ReconstructionModule(latent_dim=2, hidden=128, depth=3), datamodule=toy())  # decodes its codes at hq 0.97
    path = tmp_path_factory.mktemp("ae") / "ae.ckpt"
    t.save_checkpoint(path)
    return str(path)


def langevin_hq(model: AdversarialModule, n: int = 1000) -> float:
    sampler = build_samplers({"langevin": {}})["langevin"]
    _, x = sample_indices(model.eval(), sampler, model.score_fn(), model.ladder, 0, range(n))
    return toy_metrics(x.detach().numpy(), "grid25")["hq_fraction"]


def test_cached_codes_train_the_d_that_encoding_every_batch_trains(toy_ae, tiny_trainer):
    """Same seed: the cached loader yields the codes of the very examples the image loader yields, in the same order,
    so D ends (up to float rounding of batched encoding) on the same weights and searches as well."""
    fitted = {}
    for cache in (True, False):
        L.seed_everything(0)
        model = AdversarialModule(autoencoder_ckpt=toy_ae, cache_codes=cache, d_hidden=64, d_depth=3, lr_d=5e-3)
        fit = tiny_trainer(max_steps=1000)
        fit.fit(model, datamodule=toy(512))
        assert isinstance(fit.train_dataloader.dataset, CodeRows) == cache  # batches of codes, or of points
        fitted[cache] = model
    a, b = (fitted[c].discriminator.state_dict() for c in (True, False))
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-3, worst
    hq = {c: langevin_hq(m) for c, m in fitted.items()}
    # a short, small D (prior samples: hq 0.01); tolerance: 20 of the 1,000 samples
    assert hq[True] > 0.1 and abs(hq[True] - hq[False]) <= 0.02, hq


def test_the_codes_come_from_the_phase_and_the_data_module_stays_as_it_is(toy_ae, tiny_trainer):
    """The fit trains on the phase's train_dataloader (the codes), while the data module keeps its own training set
    and loader, during the fit and after it: a second fit on the same data module encodes the same data again."""
    dm = toy(512)
    dm.setup("fit")
    train_set, points, sigma_max, seen = dm.train_set, dm.train_set.x.clone(), [], []

    class Watch(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((pl_module.batches_are_codes, trainer.datamodule.train_set is train_set,
                         type(trainer.datamodule.train_dataloader().dataset).__name__, tuple(batch.shape)))

    for _ in range(2):
        model = AdversarialModule(autoencoder_ckpt=toy_ae, d_hidden=16, d_depth=1)
        tiny_trainer(max_steps=3, callbacks=[Watch()]).fit(model, datamodule=dm)
        assert model.train_codes is None and dm.train_set is train_set and torch.equal(dm.train_set.x, points)
        sigma_max.append(model.sigma_max.item())
    assert seen == [(True, True, "_Points", (512, 2))] * 6  # codes (the latent is 2-d too), the data module's own set
    assert sigma_max[0] == sigma_max[1]  # the same codes both times


def test_the_code_loader_draws_the_data_loaders_examples_in_its_order():
    """code_loader copies the data module's batch size and epoch-seeded shuffle: rows standing for the examples (here
    the points themselves) come in the very batches the data loader yields, epoch after epoch."""
    from dsls.data.codes import code_loader

    dm = Toy2DDataModule(train_size=100, batch_size=16, seed=7)
    dm.setup("fit")
    data, codes = dm.train_dataloader(), code_loader(dm.train_dataloader(), dm.train_set.x)
    for epoch in range(2):
        data.sampler.set_epoch(epoch), codes.sampler.set_epoch(epoch)
        pairs = list(zip(data, codes, strict=True))
        assert len(pairs) == 6 and all(torch.equal(x, z) for x, z in pairs)


def test_a_stochastic_encoder_draws_fresh_noise_on_the_cached_codes(tiny_trainer, tmp_path):
    """Cached means plus code noise drawn at each step (code_sample) train the D that encoding every batch with the
    noisy encoder trains (the same draws in the same order, up to float rounding); without the noise D differs."""
    L.seed_everything(0)
    t = tiny_trainer(max_steps=5)
    t.fit(ReconstructionModule(latent_dim=2, hidden=16, depth=1, code_noise=0.3), datamodule=toy(512))
    t.save_checkpoint(tmp_path / "ae.ckpt")
    weights = {}
    for cache, noise in ((True, 0.3), (False, 0.3), (True, 0.0)):
        L.seed_everything(0)
        model = AdversarialModule(autoencoder_ckpt=str(tmp_path / "ae.ckpt"), cache_codes=cache, d_hidden=16, d_depth=1)
        model.autoencoder.code_noise = noise
        tiny_trainer(max_steps=10).fit(model, datamodule=toy(512))
        weights[cache, noise] = torch.cat([p.detach().flatten() for p in model.discriminator.parameters()])
    assert (weights[True, 0.3] - weights[False, 0.3]).abs().max() < 1e-4
    assert (weights[True, 0.3] - weights[True, 0.0]).abs().max() > 1e-3


@pytest.mark.parametrize("refit_decoder", [True, False])
def test_joint_refit_freezes_the_encoder_and_restarts_the_schedules(toy_ae, tiny_trainer, refit_decoder):
    L.seed_everything(0)
    model = AdversarialModule(autoencoder_ckpt=toy_ae, mode="joint", refit_steps=6, refit_decoder=refit_decoder,
                              d_hidden=16, d_depth=1)
    seen = []

    def flat(module):
        return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            ae = pl_module.autoencoder
            lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]
            game = pl_module.joint  # dsls.phases.joint.JointGame
            seen.append((trainer.global_step, game.refitting, flat(ae.encoder), flat(ae.decoder), lrs, ae.training))

    tiny_trainer(max_steps=16, callbacks=[Watch()]).fit(model, datamodule=toy(64))
    steps, refitting, enc, dec, lrs, training = zip(*seen)
    assert list(steps) == list(range(1, 17))  # one optimizer step per batch in joint mode too
    assert list(refitting) == [False] * 10 + [True] * 6  # 10 joint steps, then 6 of refit
    assert not torch.equal(enc[0], enc[9]) and not torch.equal(dec[0], dec[9])  # E, G trained in the joint part
    assert all(torch.equal(enc[9], e) for e in enc[10:])  # the encoder is frozen during the refit ...
    assert all(torch.equal(dec[9], d) for d in dec[10:]) != refit_decoder  # ... G refits to its codes, if asked
    assert not any(training[10:])  # eval: its running code statistics stay put
    lr_d, lr_ae = model.hparams.lr_d, model.hparams.lr_ae
    assert lrs[8][0] < 0.1 * lr_d and lrs[9][0] > 0.9 * lr_d  # D's schedule restarts for the refit ...
    assert lrs[9][1] == (pytest.approx(lrs[9][0] / lr_d * lr_ae) if refit_decoder else 0.0)  # ... and G's with it
    assert model.joint.codes is not None and len(model.joint.codes) == 8192  # the refit trained on cached codes


def test_refit_from_scratch_starts_a_fresh_d(toy_ae, tiny_trainer):
    """refit_from='scratch': at the switch D gets a fresh, seeded init and empty Adam moments; E, G keep theirs (E
    stops, G goes on stepping: refit_decoder)."""
    L.seed_everything(0)
    model = AdversarialModule(autoencoder_ckpt=toy_ae, mode="joint", refit_steps=3, refit_from="scratch", d_hidden=16,
                              d_depth=1)
    seen = {}

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 6:  # one refit step done (the switch was at step 5 = 8 - 3)
                opt = trainer.optimizers[0]
                seen["w"] = pl_module.discriminator.layers[0].weight.detach().clone()
                seen["d_steps"] = {int(opt.state[p]["step"]) for p in pl_module.discriminator.parameters()}
                seen["e_steps"] = {int(opt.state[p]["step"]) for p in pl_module.autoencoder.encoder.parameters()}
                seen["g_steps"] = {int(opt.state[p]["step"]) for p in pl_module.autoencoder.decoder.parameters()}

    tiny_trainer(max_steps=8, callbacks=[Watch()]).fit(model, datamodule=toy(64))
    fresh = torch.nn.Linear(2, 16)
    torch.manual_seed(5)  # what the switch seeds
    fresh.reset_parameters()
    assert (seen["w"] - fresh.weight).abs().max() <= 2.1e-3  # the fresh init plus one Adam step of at most lr_d
    assert seen["d_steps"] == {1} and seen["e_steps"] == {5} and seen["g_steps"] == {6}  # G refits on


def test_refit_settings_are_checked(toy_ae):
    with pytest.raises(ConfigError, match="refit_steps=100 refits D after joint training"):
        AdversarialModule(autoencoder_ckpt=toy_ae, mode="posthoc", refit_steps=100)
    with pytest.raises(ConfigError, match="refit_from must be 'joint' or 'scratch'"):
        AdversarialModule(autoencoder_ckpt=toy_ae, mode="joint", refit_from="warm")
    with pytest.raises(ConfigError, match="d_steps_per_ae_step=0 must be >= 1"):
        AdversarialModule(autoencoder_ckpt=toy_ae, mode="joint", d_steps_per_ae_step=0)


def test_image_views_cache_each_flip(tmp_path):
    from test_image_data import make_cifar

    from dsls.data import CIFAR10DataModule

    make_cifar(tmp_path)
    dm = CIFAR10DataModule(str(tmp_path), batch_size=4, num_workers=0, val_size=10, random_flip=True, download=False)
    dm.setup("fit")
    plain, mirrored = dm.train_views()
    x0, x1 = plain[3][0], mirrored[3][0]
    assert torch.equal(x1, x0.flip(-1)) and not torch.equal(x0, x1)
    dm_noflip = CIFAR10DataModule(str(tmp_path), batch_size=4, num_workers=0, val_size=10, random_flip=False,
                                  download=False)
    dm_noflip.setup("fit")
    assert len(dm_noflip.train_views()) == 1


def test_loader_workers_are_capped_by_the_cpus():
    loader = make_loader(torch.utils.data.TensorDataset(torch.zeros(64, 2)), 8, False, num_workers=10_000)
    assert loader.num_workers == usable_cpus() <= os.cpu_count()
    rows = make_loader(CodeRows(torch.arange(40.0).view(20, 2)), 4, True, seed=0)
    batch = next(iter(rows))
    assert batch.shape == (4, 2) and torch.equal(batch[:, 1], batch[:, 0] + 1)  # whole rows, fetched as one tensor


WAIT_POLICIES = [(None, "'0'"), ("ACTIVE", None)]  # the user's OMP_WAIT_POLICY, the spin count it leads to


@pytest.fixture(scope="module")
def openmp_processes() -> dict:
    """user's policy -> (stdout, stderr) of a fresh `import dsls, torch` process with it; the processes run at once
    (their imports are most of their time)."""
    code = ("import dsls, torch; from dsls.data.loaders import make_loader, usable_cpus; "
            "loader = make_loader(torch.utils.data.TensorDataset(torch.ones(4)), 2, False, num_workers=10_000); "
            "print(loader.num_workers, usable_cpus())")
    procs = {}
    for user, _ in WAIT_POLICIES:
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        env["OMP_DISPLAY_ENV"] = "verbose"
        if user:
            env["OMP_WAIT_POLICY"] = user
        procs[user] = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
    return {user: p.communicate(timeout=120) for user, p in procs.items()}


@pytest.mark.parametrize("user, spin", WAIT_POLICIES)
def test_openmp_wait_policy_in_a_dsls_process(openmp_processes, user, spin):
    """libgomp reports its settings at start-up (OMP_DISPLAY_ENV): importing dsls before torch makes its threads
    passive (spin count 0), unless the user chose a policy. The same process reads back the loader worker cap."""
    stdout, out = openmp_processes[user]
    workers, cpus = stdout.split()
    assert workers == cpus  # the loader worker cap, read back in the same process
    policy = next(line.split("=")[1].strip() for line in out.splitlines() if "OMP_WAIT_POLICY" in line)
    spincount = next(line.split("=")[1].strip() for line in out.splitlines() if "GOMP_SPINCOUNT" in line)
    assert policy == f"'{user or 'PASSIVE'}'"
    assert spincount == spin if spin else spincount != "'0'"


def test_cpu_profile_runs_on_tiny_mnist_files(tmp_path):
    """configs/mnist/cpu.yaml through the pipeline's --profile, on MNIST-format files, with few steps."""
    import runpy

    from test_image_data import make_mnist

    make_mnist(tmp_path / "data", n_train=700, n_test=60)
    run = tmp_path / "run"
    argv = ["run_pipeline.py", "--config-dir", "configs/mnist", "--profile", "cpu", "--run-dir", str(run),
            f"--data.data_dir={tmp_path / 'data'}", "--data.download=false", "--data.val_size=100",
            "--trainer.max_steps=3", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
            "--data.batch_size=64", "--model.num_samples=40", "--model.batch_size=20",
            f"--model.data_dir={tmp_path / 'data'}"]
    old = sys.argv
    sys.argv = argv
    try:
        runpy.run_path(os.path.join(ROOT, "experiments", "run_pipeline.py"), run_name="__main__")
    finally:
        sys.argv = old
    cfg = (run / "adversarial" / "config.yaml").read_text()
    assert "val_check_interval: 1000" in cfg  # the profile's setting reached phase 2 ...
    assert "max_steps: 3" in cfg  # ... and the command line's override went on top of it
    with np.load(run / "samples-langevin.npz") as f:
        assert f["x"].shape == (40, 1, 28, 28)


def test_unknown_profile_names_the_ones_there():
    from dsls.profiles import profile_overrides

    with pytest.raises(ConfigError, match="the profiles of configs/mnist: cpu"):
        profile_overrides("configs/mnist", "gpu", ["reconstruction"])
    assert "--reconstruction.model.arch=mlp" in profile_overrides("configs/mnist", "cpu", ["reconstruction"])
    assert not any(o.startswith("--reconstruction.") for o in profile_overrides("configs/mnist", "cpu", ["search"]))
