"""Class guidance: the guided score on an exact mixture (analytic classifier), the latent classifier phase (fit through
the CLI, resume, wrong-phase and wrong-autoencoder checkpoints) and a guided search end to end on the toy model."""
import json
import math

import numpy as np
import pytest
import torch

from dsls.data import Toy2DDataModule
from dsls.errors import PhaseCheckpointError
from dsls.errors import TaskError
from dsls.guidance import ClassGuidance
from dsls.noise import SigmaLadder
from dsls.phases.latent_classifier import LatentClassifierModule, load_latent_classifier
from dsls.phases.reconstruction import ReconstructionModule
from dsls.phases.search import LatentSearchModule
from dsls.samplers import make_sampler, sample_indices
from dsls.score import GaussianMixture, LogRatio, OracleDiscriminator, Score, noised_prior

from conftest import make_tiny_trainer, toy_classifier_args  # the tiny_trainer fixture's factory; dsls fit args

K, RADIUS, STD = 8, 3.0, 0.1  # 8 components on a ring of radius 3, std 0.1: ~23 std apart, equal weights
_angles = 2 * math.pi * torch.arange(K, dtype=torch.float32) / K
MEANS = RADIUS * torch.stack([_angles.cos(), _angles.sin()], 1)


def analytic_log_prob(z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log C(k | z, σ) = log w_k N(z; μ_k, (std² + σ²)I) − logsumexp_k (equal weights and variances: the normalising
    constants cancel), (B, K)."""
    var = STD**2 + sigma.view(-1, 1) ** 2
    return torch.log_softmax(-((z.unsqueeze(1) - MEANS) ** 2).sum(-1) / (2 * var), dim=1)


class Stub:
    """What sample_indices needs of a model: the latent is the data."""

    device = torch.device("cpu")
    latent_shape = (2,)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z


def ring_search(scale):
    score = Score([LogRatio(OracleDiscriminator(GaussianMixture(MEANS, torch.full((K,), STD**2)))), noised_prior])
    labels_for = lambda rows: torch.tensor(rows) % K  # noqa: E731  balanced: sample i asks for component i mod 8
    terms = None if scale is None else (lambda rows: [ClassGuidance(analytic_log_prob, labels_for(rows), scale)])
    indices = list(range(396))  # not a multiple of 8: the batch runs padded, so terms() sees the padded rows
    _, x = sample_indices(Stub(), make_sampler("langevin"), score, SigmaLadder(6.0, 0.03, 10), 0, indices,
                          terms=terms)
    assert x.shape == (396, 2) and torch.isfinite(x).all()
    dist = torch.cdist(x, MEANS)
    hit = (dist.argmin(1) == labels_for(indices)) & (dist.min(1).values <= 4 * STD)
    on_a_mode = (dist.min(1).values <= 4 * STD).float().mean().item()
    return hit.float().mean().item(), on_a_mode


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_guided_langevin_lands_in_the_requested_component(scale):
    hit, on_a_mode = ring_search(scale)
    assert hit >= 0.95, f"scale {scale}: only {hit:.1%} of the samples in their requested component"
    assert on_a_mode >= 0.95


def test_without_guidance_the_component_is_chance():
    hit, on_a_mode = ring_search(None)
    assert on_a_mode >= 0.95  # the sampler does reach the modes: a low hit rate is not a failed search
    assert hit < 0.30, f"{hit:.1%} of unguided samples in 'their' component: the guided test proves nothing"


def test_class_guidance_term_is_scale_times_log_prob_of_each_rows_label():
    z, sigma = torch.randn(5, 2), torch.full((5,), 0.5)
    labels = torch.tensor([0, 3, 7, 3, 1])
    out = ClassGuidance(analytic_log_prob, labels, 2.5)(z, sigma)
    expected = 2.5 * analytic_log_prob(z, sigma)[torch.arange(5), labels]
    torch.testing.assert_close(out, expected)


# -- checkpoints shared by the tests below ---------------------------------------------------------------------------
cli_args = toy_classifier_args  # `dsls fit` of the toy latent classifier config, made small


def last_ckpt(run) -> str:
    return str(run / "latent_classifier" / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def ckpts(toy_ae_ckpt, toy_adv_ckpt, toy_clf_ckpt, tiny_trainer, tmp_path_factory):
    """conftest's toy phase-2 checkpoint, its phase-1 checkpoint and the latent classifier on that phase 1 (5 steps,
    via the CLI); and a classifier on another phase-1 autoencoder (its own: the refusal needs a second autoencoder)."""
    assert torch.load(toy_adv_ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]["autoencoder_ckpt"] \
        == toy_ae_ckpt
    assert torch.load(toy_ae_ckpt, map_location="cpu", weights_only=False)["dsls_phase"] == "reconstruction"
    d = tmp_path_factory.mktemp("guidance")
    torch.manual_seed(123)  # other initial weights
    t = tiny_trainer(max_steps=3)
    t.fit(ReconstructionModule(latent_dim=2, hidden=16, depth=1),
          datamodule=Toy2DDataModule(train_size=1024, batch_size=128))
    t.save_checkpoint(d / "other-ae.ckpt")
    t = tiny_trainer(max_steps=2)
    t.fit(LatentClassifierModule(autoencoder_ckpt=str(d / "other-ae.ckpt"), num_classes=25, c_hidden=16, c_depth=1),
          datamodule=Toy2DDataModule(train_size=1024, batch_size=128, labels=True))
    t.save_checkpoint(d / "other-clf.ckpt")
    return {"dir": d, "adv": toy_adv_ckpt, "ae": toy_ae_ckpt, "clf": toy_clf_ckpt, "other_ae": str(d / "other-ae.ckpt"),
            "other_clf": str(d / "other-clf.ckpt")}


# -- 2. the latent classifier phase ----------------------------------------------------------------------------------
def test_cli_fit_writes_a_latent_classifier_checkpoint(ckpts):
    ck = torch.load(ckpts["clf"], map_location="cpu", weights_only=False)
    assert ck["dsls_phase"] == "latent_classifier" and ck["dsls_dataset"] == "grid25"
    assert ck["global_step"] == 5 and ck["hyper_parameters"]["num_classes"] == 25
    clf = load_latent_classifier(ckpts["clf"])
    assert not clf.training and not any(p.requires_grad for p in clf.parameters())
    # trained on the frozen phase-1 autoencoder: its weights are the phase-1 ones, untouched
    ae_state = torch.load(ckpts["ae"], map_location="cpu", weights_only=False)["state_dict"]
    for k, v in clf.autoencoder.state_dict().items():
        torch.testing.assert_close(v, ae_state[f"autoencoder.{k}"], rtol=0, atol=0, msg=k)
    assert clf.sigma_max.item() > 0  # auto σ_max travelled in the checkpoint
    lp = clf.log_prob(torch.randn(7, 2), torch.full((7,), 0.3))
    assert lp.shape == (7, 25)
    torch.testing.assert_close(lp.exp().sum(1), torch.ones(7))


def test_latent_classifier_needs_labelled_data(ckpts, tiny_trainer):
    model = LatentClassifierModule(autoencoder_ckpt=ckpts["ae"], num_classes=25, c_hidden=16, c_depth=1)
    t = tiny_trainer(fast_dev_run=True)
    with pytest.raises(ValueError, match=r"has no labels.*--data.labels=true"):
        t.fit(model, datamodule=Toy2DDataModule(train_size=256, batch_size=64))
    with pytest.raises(ValueError, match=r"--model.num_classes=10 but the data has 25 classes"):
        t.fit(LatentClassifierModule(autoencoder_ckpt=ckpts["ae"], num_classes=10, c_hidden=16, c_depth=1),
              datamodule=Toy2DDataModule(train_size=256, batch_size=64, labels=True))


# -- 3. wrong checkpoints --------------------------------------------------------------------------------------------
def test_wrong_phase_checkpoints_name_the_flag(ckpts):
    adv = ckpts["adv"]
    with pytest.raises(PhaseCheckpointError, match=r"--model.autoencoder_ckpt=.*is a latent_classifier.*needs a "
                                                   r"reconstruction \(phase 1\) checkpoint or an adversarial"):
        LatentClassifierModule(autoencoder_ckpt=ckpts["clf"])
    with pytest.raises(PhaseCheckpointError, match=r"--model.classifier_ckpt=.*is an adversarial \(phase 2\).*"
                                                   r"needs a latent_classifier"):
        load_latent_classifier(adv)
    with pytest.raises(PhaseCheckpointError, match=r"--model.classifier_ckpt=.*is an adversarial"):
        LatentSearchModule(ckpt=adv, classifier_ckpt=adv, labels="balanced")
    with pytest.raises(PhaseCheckpointError, match=r"--model.classifier_ckpt=.*is a reconstruction"):
        LatentSearchModule(ckpt=adv, classifier_ckpt=ckpts["ae"], labels="balanced")
    with pytest.raises(PhaseCheckpointError, match=r"--model.labels needs --model.classifier_ckpt"):
        LatentSearchModule(ckpt=adv, labels="balanced")
    with pytest.raises(PhaseCheckpointError, match=r"--model.ckpt=.*is a latent_classifier"):
        LatentSearchModule(ckpt=ckpts["clf"])  # the classifier is not a model to sample from


def test_classifier_of_another_autoencoder_is_refused(ckpts):
    with pytest.raises(PhaseCheckpointError, match="another autoencoder"):
        LatentSearchModule(ckpt=ckpts["adv"], classifier_ckpt=ckpts["other_clf"], labels="balanced")
    LatentSearchModule(ckpt=ckpts["adv"], classifier_ckpt=ckpts["clf"], labels="balanced")  # its own: accepted


@pytest.mark.parametrize("labels", [99, 25, -1, "all"])
def test_labels_outside_the_classes_are_a_task_error(ckpts, labels):
    with pytest.raises(TaskError, match=r"labels must be 'balanced' or a class in 0..24"):
        LatentSearchModule(ckpt=ckpts["adv"], classifier_ckpt=ckpts["clf"], labels=labels)


# -- 4. resume -------------------------------------------------------------------------------------------------------
def test_cli_resume_continues_to_the_new_max_steps(ckpts, tmp_path):
    from dsls.cli import main

    run = tmp_path / "run"
    main(cli_args(ckpts["ae"], run, 3))
    assert torch.load(last_ckpt(run), weights_only=False)["global_step"] == 3
    cli = main(cli_args(ckpts["ae"], run, 6) + [f"--ckpt_path={last_ckpt(run)}"])
    assert cli.trainer.global_step == 6  # 3 restored + 3 new, not 6 new
    ck = torch.load(last_ckpt(run), weights_only=False)
    assert ck["global_step"] == 6 and ck["dsls_phase"] == "latent_classifier"


def test_resume_from_a_phase_2_checkpoint_fails(ckpts, tiny_trainer):
    model = LatentClassifierModule(autoencoder_ckpt=ckpts["ae"], num_classes=25, c_hidden=16, c_depth=1)
    t = tiny_trainer(max_steps=10)
    with pytest.raises(PhaseCheckpointError, match=r"cannot resume LatentClassifierModule \(latent_classifier\) "
                                                   r"from an? adversarial checkpoint"):
        t.fit(model, datamodule=Toy2DDataModule(train_size=256, batch_size=64, labels=True), ckpt_path=ckpts["adv"])


def test_cli_resume_of_the_classifier_config_from_a_phase_2_checkpoint_fails(ckpts, tmp_path):
    """LightningCLI rebuilds the model named in the --ckpt_path checkpoint: without DSLSCLI's check, this silently
    trained phase 2 into <run>/adversarial/."""
    from dsls.cli import main

    run = tmp_path / "run"
    with pytest.raises(PhaseCheckpointError, match=r"--ckpt_path=.*adversarial.*latent_classifier") as e:
        main(cli_args(ckpts["ae"], run, 10) + [f"--ckpt_path={ckpts['adv']}"])
    assert "phase 2" in str(e.value)
    assert not list(run.rglob("*.ckpt"))


# -- 5. guided search end to end -------------------------------------------------------------------------------------
def search(ckpts, out_dir, **kw) -> LatentSearchModule:
    m = LatentSearchModule(ckpt=ckpts["adv"], samplers={"langevin": {}}, num_samples=64, batch_size=32,
                           out_dir=str(out_dir), **kw)
    make_tiny_trainer(inference_mode=False).predict(m, return_predictions=False)
    return m


def load(out_dir) -> dict:
    with np.load(out_dir / "samples-langevin.npz") as f:
        return {k: f[k] for k in f.files}


def test_guided_search_writes_labels_accuracy_and_the_class_grid(ckpts, tmp_path):
    # The toy checkpoints are 5-step models: the plumbing is tested here, not the accuracy.
    guided = tmp_path / "guided"
    search(ckpts, guided, classifier_ckpt=ckpts["clf"], labels="balanced", guidance_scale=3.0)
    npz = load(guided)
    assert npz["y"].dtype == np.int64 and np.array_equal(npz["y"], np.arange(64) % 25)
    assert npz["x"].shape == (64, 2) and np.isfinite(npz["x"]).all()
    entry = json.loads((guided / "results.json").read_text())["langevin"]
    assert entry["guidance_scale"] == 3.0 and entry["labels"] == "balanced"
    assert isinstance(entry["class_accuracy"], float) and 0.0 <= entry["class_accuracy"] <= 1.0
    from dsls.tasks.generate import class_accuracy

    assert entry["class_accuracy"] == pytest.approx(class_accuracy(npz["x"], npz["y"], "grid25", {}))
    assert (guided / "guided-langevin.png").is_file() and (guided / "samples.png").is_file()

    # the term is what moves the samples: scale 0 gives the unguided search, scale 3 does not
    search(ckpts, tmp_path / "plain")
    search(ckpts, tmp_path / "zero", classifier_ckpt=ckpts["clf"], labels="balanced", guidance_scale=0.0)
    plain, zero = load(tmp_path / "plain"), load(tmp_path / "zero")
    assert "y" not in plain and not (tmp_path / "plain" / "guided-langevin.png").exists()
    assert "class_accuracy" not in json.loads((tmp_path / "plain" / "results.json").read_text())["langevin"]
    np.testing.assert_array_equal(npz["z0"], plain["z0"])
    np.testing.assert_allclose(zero["z"], plain["z"], rtol=1e-5, atol=1e-6)
    assert np.abs(npz["z"] - plain["z"]).max() > 1e-3


def test_guided_figures_and_likelihood_say_which_samples_were_guided(ckpts, tiny_trainer, tmp_path, monkeypatch):
    """samples.png's panels and guided-<sampler>.png say 'guided: w = 3, balanced labels', or for 'none' that it
    ignored the labels; likelihood.json and its table mark the guided latents."""
    import matplotlib.pyplot as plt

    from dsls.tasks.likelihood import evaluate_likelihood, format_likelihood

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    m = LatentSearchModule(ckpt=ckpts["adv"], samplers={"none": {}, "langevin": {"steps_per_level": 1}},
                           num_samples=32, out_dir=str(tmp_path), classifier_ckpt=ckpts["clf"], labels="balanced",
                           guidance_scale=3.0, num_levels=3)
    tiny_trainer(inference_mode=False).predict(m, return_predictions=False)
    titles = {f: [ax.get_title() for ax in f.axes] for f in figures}
    overview = next(t for t in titles.values() if any(x.startswith("data (grid25)") for x in t))
    assert any(x.startswith("langevin\n") and "guided: w = 3, balanced labels" in x for x in overview)
    assert any(x.startswith("none\nnot guided (labels ignored)") for x in overview)
    grids = [t[0] for t in titles.values() if t and ("class" in t[0])]
    assert any(x.startswith("none: not guided (labels ignored)") for x in grids), grids
    assert any(x.startswith("langevin: guided: w = 3, balanced labels") for x in grids), grids
    assert (tmp_path / "guided-none.png").is_file() and (tmp_path / "guided-langevin.png").is_file()

    hp = {"ckpt": ckpts["adv"], "labels": "balanced", "guidance_scale": 3.0, "num_levels": 3, "seed": 0}
    res = evaluate_likelihood(hp, str(tmp_path), ["none", "langevin"], n=8, batch_size=8, device="cpu")
    saved = json.loads((tmp_path / "likelihood.json").read_text())
    assert saved["langevin"]["guided"] is True and saved["langevin"]["labels"] == "balanced"
    assert saved["langevin"]["guidance_scale"] == 3.0 and saved["none"]["guided"] is False
    assert "guided" not in saved["codes"] and "guided" not in saved["prior"]
    table = format_likelihood(res)
    assert "langevin (guided, w=3, balanced labels) |" in table and "none (not guided: labels ignored) |" in table


def test_guided_search_with_one_label(ckpts, tmp_path):
    search(ckpts, tmp_path, classifier_ckpt=ckpts["clf"], labels=7, guidance_scale=1.0)
    npz = load(tmp_path)
    assert npz["y"].dtype == np.int64 and (npz["y"] == 7).all() and len(npz["y"]) == 64
    entry = json.loads((tmp_path / "results.json").read_text())["langevin"]
    assert entry["labels"] == 7 and entry["guidance_scale"] == 1.0 and "class_accuracy" in entry


def test_a_phase_2_checkpoint_gives_its_autoencoder_and_sigma_max(ckpts):
    """From phase 2's checkpoint the classifier sees D's codes (joint mode fine-tunes E) and D's ladder."""
    adv = torch.load(ckpts["adv"], map_location="cpu", weights_only=False)
    clf = LatentClassifierModule(autoencoder_ckpt=ckpts["adv"], num_classes=25, c_hidden=16, c_depth=1)
    assert clf.sigma_max.item() == adv["state_dict"]["sigma_max"].item()
    ae = {k[len("autoencoder."):]: v for k, v in adv["state_dict"].items() if k.startswith("autoencoder.")}
    assert all(torch.equal(v, ae[k]) for k, v in clf.autoencoder.state_dict().items())
