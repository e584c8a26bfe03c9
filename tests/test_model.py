"""dsls.load and LatentModel (dsls.model), the Python face of a trained model:

1. a run folder, a phase-2 checkpoint and a search.ckpt load the same model, and its samples are the ones `dsls predict`
   writes with the same checkpoint, seed and settings (unguided and guided: tests/contract.py);
2. every public method on a tiny checkpoint, its errors, and a prior that is not D;
3. inverse problems: the paste-back of the observed pixels (LatentModel.inpaint, dsls.tasks.inverse.solve);
4. a run folder written by dsls 0.1.0 (tests/data/run-v0.1.0) still loads and reproduces its samples; `import dsls`
   and `import dsls.noise` stay free of Lightning, and `dsls.load` works after a bare `import dsls`.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import dsls
from dsls.errors import ConfigError, PhaseCheckpointError, TaskError
from dsls.model import LatentModel
from dsls.nets import NoiseConditionalDiscriminator
from dsls.nets.autoencoder import Autoencoder
from dsls.noise import SigmaLadder
from dsls.phases.search import LatentSearchModule
from dsls.priors import DiscriminatorPrior, LatentPrior

from conftest import make_tiny_trainer  # the tiny_trainer fixture's factory, for the search helper
from contract import assert_same_samples, assert_seed_matters  # tests/contract.py: the reproducibility contract

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V010 = os.path.join(REPO, "tests", "data", "run-v0.1.0")  # written by dsls 0.1.0: tests/data/README.md


def search(out_dir, **kw) -> LatentSearchModule:
    """`dsls predict` in-process: the search phase under Trainer.predict, writing samples-<sampler>.npz."""
    model = LatentSearchModule(out_dir=str(out_dir), **kw)
    make_tiny_trainer(inference_mode=False).predict(model, return_predictions=False)
    return model


def samples(out_dir, name: str) -> dict:
    with np.load(os.path.join(out_dir, f"samples-{name}.npz")) as f:
        return {k: f[k] for k in f.files}


def stamp(run, phase: str) -> None:
    (run / phase / "DONE").write_text(json.dumps({"checkpoint": "checkpoints/last.ckpt", "global_step": 5,
                                                  "seconds": 1}) + "\n")


@pytest.fixture(scope="module")
def toy_run(toy_adv_ckpt, toy_clf_ckpt, tmp_path_factory):
    """A run folder as the pipeline leaves it: conftest's toy phase-2 checkpoint and latent classifier on its
    autoencoder, each with its DONE stamp, and an unguided search (none, pc) into the folder (its search.ckpt)."""
    run = tmp_path_factory.mktemp("model") / "run"
    adv = run / "adversarial" / "checkpoints" / "last.ckpt"
    adv.parent.mkdir(parents=True)
    shutil.copy(toy_adv_ckpt, adv)
    stamp(run, "adversarial")
    clf = run / "latent_classifier" / "checkpoints" / "last.ckpt"
    clf.parent.mkdir(parents=True)
    shutil.copy(toy_clf_ckpt, clf)
    stamp(run, "latent_classifier")
    search(run, ckpt=str(adv), samplers={"none": {}, "pc": {"levels": 18}}, num_samples=64, seed=3)
    return {"run": run, "adv": str(adv), "clf": str(clf)}


@pytest.fixture(scope="module")
def toy_model(toy_run) -> LatentModel:
    return dsls.load(toy_run["run"])


# -- 1. the same model and the same samples as the command line ------------------------------------------------------
def test_sample_is_what_dsls_predict_writes(toy_run):
    model = dsls.load(toy_run["adv"])
    x, z = model.sample(64, "pc", seed=3, levels=18, return_latents=True)
    assert x.shape == (64, 2) and z.shape == (64, 2)
    assert_same_samples({"x": x.numpy(), "z": z.numpy()}, samples(toy_run["run"], "pc"), "sample vs predict, pc",
                        keys=("z", "x"))
    _, n0 = model.sample(64, "none", seed=3, return_latents=True)  # 'none' keeps the start latent: z0 bit for bit
    np.testing.assert_array_equal(n0.numpy(), samples(toy_run["run"], "none")["z0"])
    other = model.sample(64, "pc", seed=4, levels=18)
    assert_seed_matters({"x": x.numpy()}, {"x": other.numpy()}, "pc, seed 3 vs 4", keys=("x",))
    # batches change nothing (per-sample seeds, padded rows)
    assert_same_samples({"x": model.sample(64, "pc", seed=3, levels=18, batch_size=10).numpy()}, {"x": x.numpy()},
                        "batch 10 vs 64", keys=("x",))


def test_guided_samples_are_what_a_guided_search_writes(toy_run, tmp_path):
    kw = dict(samplers={"langevin": {"steps_per_level": 2}}, num_samples=40, seed=1)
    search(tmp_path, ckpt=toy_run["adv"], classifier_ckpt=toy_run["clf"], labels="balanced", guidance_scale=2.0, **kw)
    saved = samples(tmp_path, "langevin")
    guided = dsls.load(toy_run["adv"]).with_classifier(toy_run["clf"])
    x, z = guided.sample(40, seed=1, labels="balanced", guidance_scale=2.0, steps_per_level=2, return_latents=True)
    assert_same_samples({"x": x.numpy(), "z": z.numpy()}, saved, "guided sample vs predict", keys=("z", "x"))
    np.testing.assert_array_equal(saved["y"], np.arange(40) % 25)
    # the run folder attaches its own classifier; labels as a list are the same as 'balanced'
    from_run = dsls.load(toy_run["run"])
    assert from_run.classifier is not None and from_run.classifier.num_classes == 25
    again = from_run.sample(40, seed=1, labels=list(np.arange(40) % 25), guidance_scale=2.0, steps_per_level=2)
    assert_same_samples({"x": again.numpy()}, {"x": x.numpy()}, "labels as a list", keys=("x",))
    plain = guided.sample(40, seed=1, steps_per_level=2)
    assert np.abs(plain.numpy() - x.numpy()).max() > 1e-3  # the guidance term moved the samples


def test_a_run_folder_a_phase_2_checkpoint_and_a_search_ckpt_give_the_same_model(toy_run):
    models = [dsls.load(p) for p in (toy_run["run"], toy_run["adv"], toy_run["run"] / "search.ckpt")]
    ref = models[0]
    for m in models[1:]:
        for part in ("autoencoder", "prior"):
            a, b = getattr(ref, part).state_dict(), getattr(m, part).state_dict()
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
        assert m.ladder.state_dict() == ref.ladder.state_dict()
        assert m.dataset_name == "grid25" and m.datamodule_hparams == ref.datamodule_hparams
    xs = [m.sample(16, steps_per_level=1).numpy() for m in models]
    np.testing.assert_array_equal(xs[0], xs[1])
    np.testing.assert_array_equal(xs[0], xs[2])


# -- 2. every public method, and the errors ---------------------------------------------------------------------------
def test_every_public_method_runs_with_the_right_shapes(toy_model):
    m = toy_model
    assert isinstance(m, torch.nn.Module) and m.to("cpu") is m and m.device.type == "cpu"
    assert m.train().training is False and m.autoencoder.training is False  # frozen: stays in evaluation mode
    assert isinstance(m.ladder, SigmaLadder) and m.data_shape == (2,) and m.latent_shape == (2,)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    z = m.encode(x)
    assert z.shape == (6, 2) and m.decode(z).shape == (6, 2)
    assert m.score(z, 0.1).shape == (6, 2) and m.logit(z, 0.1).shape == (6,)
    torch.testing.assert_close(m.score(z, torch.full((6,), 0.1)), m.score(z, 0.1))
    lp = m.log_prob(z)
    assert lp.shape == (6,) and torch.isfinite(lp).all()
    torch.testing.assert_close(m.log_prob(x=x), lp, rtol=0, atol=0)  # x= encodes first: the same solve
    assert m.interpolate(x[0], x[1], steps=5).shape == (5, 2)
    path = m.interpolate(x[:3], x[3:], steps=4)
    assert path.shape == (3, 4, 2) and torch.allclose(path[:, 0], m.decode(z[:3]), atol=1e-2)  # starts at x0's code
    known = torch.tensor([[1.0, 0.0]]).expand(6, 2)  # the first coordinate observed
    out = m.inpaint(x, known, steps_per_level=1)
    assert out.shape == (6, 2) and torch.equal(out[:, 0], x[:, 0])
    assert not torch.equal(m.inpaint(x, known, paste=False, steps_per_level=1)[:, 0], x[:, 0])
    with pytest.raises(TaskError, match="colorization needs a model of colour images"):
        m.colorize(x)
    guided = m.sample(5, "ode", labels=3, method="heun2", steps=3)
    assert guided.shape == (5, 2) and torch.isfinite(guided).all()


def test_sampler_settings_are_checked_as_on_the_command_line(toy_model):
    with pytest.raises(ConfigError, match=r"sampler 'langevin' has no setting 'step_per_level'; its settings: "
                                          r"eps0, steps_per_level"):
        toy_model.sample(4, step_per_level=2)
    with pytest.raises(ConfigError, match="unknown sampler 'lagnevin'; registered samplers: none, langevin"):
        toy_model.sample(4, "lagnevin")
    with pytest.raises(ConfigError, match="snr must be > 0"):
        toy_model.sample(4, "pc", snr=0)


def test_clear_errors(toy_run, toy_model, tmp_path):
    unguided = dsls.load(toy_run["adv"])
    with pytest.raises(ConfigError, match=r"labels need a latent classifier: model = model.with_classifier"):
        unguided.sample(4, labels=1)
    with pytest.raises(ConfigError, match="guidance_scale guides only with labels"):
        toy_model.sample(4, guidance_scale=2.0)
    with pytest.raises(TaskError, match=r"labels must be 'balanced' or a class in 0..24"):
        toy_model.sample(4, labels=25)
    with pytest.raises(TaskError, match=r"labels must be .*a list of 4"):
        toy_model.sample(4, labels=[1, 2])
    with pytest.raises(ConfigError, match=r"log_prob takes latents, model.log_prob\(z\), or data"):
        toy_model.log_prob()
    with pytest.raises(ConfigError, match="shaped like x"):
        toy_model.inpaint(torch.zeros(3, 2), torch.ones(3, 3))
    ae = torch.load(toy_run["adv"], weights_only=True)["hyper_parameters"]["autoencoder_ckpt"]
    with pytest.raises(PhaseCheckpointError, match=r"path=.* is a reconstruction \(phase 1\) checkpoint, but this "
                                                   r"needs an adversarial \(phase 2\)"):
        dsls.load(ae)
    with pytest.raises(PhaseCheckpointError, match=r"classifier=.* is an adversarial \(phase 2\) checkpoint"):
        unguided.with_classifier(toy_run["adv"])
    unfinished = tmp_path / "run" / "adversarial" / "checkpoints"
    unfinished.mkdir(parents=True)
    shutil.copy(toy_run["adv"], unfinished / "last.ckpt")
    with pytest.raises(PhaseCheckpointError, match=r"phase 2 has not finished \(no adversarial/DONE stamp\): to use "
                                                   r"it as it is, pass .*adversarial/checkpoints/last.ckpt"):
        dsls.load(tmp_path / "run")


class AnalyticScorePrior(LatentPrior):
    """A prior that gives its score directly, as a score network would: here q = N(0, I), s = −z/(1+σ²)."""

    kind = "score network"

    def score_terms(self):
        return [], [lambda z, sigma: -z / (1 + sigma.view(-1, 1) ** 2)]


def image_model(prior: LatentPrior = None) -> LatentModel:
    """An untrained LatentModel of 3×4×4 images: the plumbing of the image methods, not their quality."""
    torch.manual_seed(0)
    ae = Autoencoder((3, 4, 4), latent_dim=4, arch="mlp", hidden=16, depth=1)
    prior = prior or DiscriminatorPrior(NoiseConditionalDiscriminator(4, hidden=16, depth=1))
    return LatentModel(ae, prior, SigmaLadder(2.0, 0.05, 3))


def test_a_prior_without_a_logit_samples_and_says_it_has_no_logit():
    model = image_model(AnalyticScorePrior())
    z = torch.randn(5, 4)
    torch.testing.assert_close(model.score(z, 0.5), -z / 1.25)
    assert model.sample(5, steps_per_level=1).shape == (5, 3, 4, 4)
    with pytest.raises(TaskError, match=r"latent prior \(score network\) has no logit.*model.score"):
        model.logit(z, 0.5)


# -- 3. inverse problems: the observed pixels pasted back -------------------------------------------------------------
def test_inpaint_pastes_the_observed_pixels_back_and_colorize_keeps_the_luma_approximately():
    model = image_model()
    x = torch.rand(5, 3, 4, 4) * 2 - 1
    mask = torch.zeros(5, 3, 4, 4)
    mask[:, :, :2] = 1  # the top half known
    out = model.inpaint(x, mask, steps_per_level=1)
    assert out.shape == x.shape and torch.equal(out[mask == 1], x[mask == 1])
    raw = model.inpaint(x, mask, paste=False, steps_per_level=1)
    torch.testing.assert_close(out[mask == 0], raw[mask == 0], rtol=0, atol=0)  # only the observed pixels change
    assert not torch.equal(raw[mask == 1], x[mask == 1])
    assert model.colorize(x, steps_per_level=1).shape == x.shape
    grey = x.mean(1, keepdim=True)
    assert model.colorize(grey, steps_per_level=1).shape == x.shape  # one grey channel: its luma is itself


def test_solve_writes_dsls_pasted_for_inpainting_only():
    from dsls.tasks.inverse import solve

    model, truth = image_model(), torch.rand(7, 3, 4, 4) * 2 - 1
    quiet = dict(settings={"steps_per_level": 1}, batch_size=4, log=lambda *a: None)
    out = solve(model, truth, "inpaint", **quiet)
    a, dsls_metrics = out["arrays"], out["metrics"]["dsls"]
    known = a["mask"] == 1
    assert set(a) == {"truth", "observed", "mask", "dsls", "dsls_pasted", "baseline"}
    np.testing.assert_array_equal(a["dsls_pasted"][known], a["observed"][known])  # exactly the observation
    np.testing.assert_array_equal(a["dsls_pasted"][~known], a["dsls"][~known])
    assert dsls_metrics["residual_pasted"] < 1e-6 < dsls_metrics["residual"]
    # the same results as the Python API (one code path), and as another batch size
    np.testing.assert_array_equal(a["dsls_pasted"], model.inpaint(truth, torch.from_numpy(a["mask"]), batch_size=4,
                                                                  steps_per_level=1).clamp(-1, 1).numpy())
    again = solve(model, truth, "inpaint", **{**quiet, "batch_size": 7})["arrays"]
    assert_same_samples(again, a, "inpaint, batch 7 vs 4", keys=("dsls", "dsls_pasted", "baseline"))
    colour = solve(model, truth, "colorize", **quiet)
    assert "dsls_pasted" not in colour["arrays"] and "residual_pasted" not in colour["metrics"]["dsls"]


# -- 4. old run folders, and the lazy import -------------------------------------------------------------------------
def test_a_run_folder_of_dsls_0_1_0_loads_and_reproduces_its_samples():
    """tests/data/run-v0.1.0 (tests/data/make_run_v010.py): its search.ckpt names its checkpoints by the paths where
    they were written (runs/toy/run-v0.1.0/...), so loading it finds them beside it instead."""
    from dsls.tasks.heldout import heldout_data

    model = dsls.load(V010)
    assert model.classifier is not None and model.dataset_name == "grid25"
    saved = dict(np.load(os.path.join(V010, "samples-pc.npz")))  # 0.1.0's guided pc search: configs/toy/search.yaml
    x, z = model.sample(64, "pc", seed=0, labels="balanced", levels=18, snr=0.5, return_latents=True)
    assert_same_samples({"x": x.numpy(), "z": z.numpy()}, saved, "0.1.0's samples", keys=("z", "x"))
    from_search = dsls.load(os.path.join(V010, "search.ckpt"))
    assert from_search.classifier is not None
    x2 = from_search.sample(64, "pc", seed=0, labels="balanced", levels=18, snr=0.5)
    assert_same_samples({"x": x2.numpy()}, saved, "0.1.0's samples from its search.ckpt", keys=("x",))
    assert heldout_data(model, 8).shape == (8, 2)  # the data module's class path it recorded still resolves


def test_import_dsls_stays_free_of_lightning_and_load_is_reached_lazily():
    code = ("import sys, dsls.noise; assert 'lightning' not in sys.modules, 'dsls.noise imported lightning'; "
            "import dsls; assert 'lightning' not in sys.modules, 'import dsls imported lightning'; "
            f"print(tuple(dsls.load({V010!r}).sample(4, steps_per_level=1).shape))")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "(4, 2)"
    with pytest.raises(AttributeError, match="module 'dsls' has no attribute 'lod'"):
        dsls.lod  # noqa: B018
