import os

# Before anything imports torch (conftest is imported before the test modules): OpenMP threads that spin while
# waiting make every op ~10x slower on a machine whose cores are busy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _dsls_cache(tmp_path_factory):
    """Caches (the digits classifier, reference statistics) go to a per-session folder, never to ~/.cache."""
    old = os.environ.get("DSLS_CACHE")
    os.environ["DSLS_CACHE"] = str(tmp_path_factory.mktemp("dsls-cache"))
    yield
    if old is None:
        os.environ.pop("DSLS_CACHE", None)
    else:
        os.environ["DSLS_CACHE"] = old


# -- one tiny Trainer ------------------------------------------------------------------------------------------------
TINY_TRAINER = {"max_steps": 5, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                "enable_model_summary": False, "accelerator": "cpu", "num_sanity_val_steps": 0,
                "limit_val_batches": 0}


def make_tiny_trainer(**overrides):
    import lightning as L

    return L.Trainer(**{**TINY_TRAINER, **overrides})


@pytest.fixture(scope="session")
def tiny_trainer():
    """tiny_trainer(**overrides) -> a quiet CPU Trainer: 5 steps, no logger, checkpointing, progress bar, model
    summary or validation (sanity or otherwise) unless an override asks for them (e.g. callbacks=[...],
    limit_val_batches=1, inference_mode=False for a search)."""
    return make_tiny_trainer


def _fit_quick(model, steps: int, path, **data) -> str:
    """Fit `model` for `steps` steps on 1024 toy points (data: more Toy2DDataModule settings, e.g. labels=True) and
    save its checkpoint at `path`."""
    from dsls.data import Toy2DDataModule

    t = make_tiny_trainer(max_steps=steps)
    t.fit(model, datamodule=Toy2DDataModule(train_size=1024, batch_size=128, **data))
    t.save_checkpoint(path)
    return str(path)


# -- tiny checkpoints, made once a session: for tests of plumbing, not of quality ------------------------------------
@pytest.fixture(scope="session")
def _toy_phases(tmp_path_factory) -> dict:
    from dsls.phases.adversarial import AdversarialModule
    from dsls.phases.reconstruction import ReconstructionModule

    import torch

    torch.manual_seed(0)  # the same tiny models in every session: tests that read their samples see the same ones
    d = tmp_path_factory.mktemp("toy-ckpt")
    ae = _fit_quick(ReconstructionModule(latent_dim=2, hidden=16, depth=1), 5, d / "ae.ckpt")
    return {"ae": ae, "adv": _fit_quick(AdversarialModule(autoencoder_ckpt=ae, d_hidden=16, d_depth=1), 5,
                                        d / "adv.ckpt")}


@pytest.fixture(scope="session")
def toy_ae_ckpt(_toy_phases) -> str:
    """A tiny phase-1 checkpoint on the toy data (grid25, latent_dim 2, 5 steps)."""
    return _toy_phases["ae"]


@pytest.fixture(scope="session")
def toy_adv_ckpt(_toy_phases) -> str:
    """A tiny post-hoc phase-2 checkpoint on toy_ae_ckpt (5 steps)."""
    return _toy_phases["adv"]


def toy_classifier_args(ae: str, run, steps: int) -> list:
    """`dsls fit` of the toy latent classifier config on the autoencoder `ae`, made small."""
    return ["fit", "--config", "configs/toy/latent_classifier.yaml", f"--model.autoencoder_ckpt={ae}",
            "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            "--trainer.limit_val_batches=0", f"--trainer.max_steps={steps}", "--data.train_size=1024",
            "--data.batch_size=128", "--model.c_hidden=16", "--model.c_depth=1", f"--run_dir={run}"]


@pytest.fixture(scope="session")
def toy_clf_ckpt(toy_ae_ckpt, tmp_path_factory) -> str:
    """A tiny latent classifier (25 classes) on toy_ae_ckpt's autoencoder, fitted for 5 steps through `dsls fit`:
    its run folder's latent_classifier/checkpoints/last.ckpt."""
    from dsls.cli import main

    run = tmp_path_factory.mktemp("toy-clf") / "run"
    main(toy_classifier_args(toy_ae_ckpt, run, 5))
    return str(run / "latent_classifier" / "checkpoints" / "last.ckpt")


TASK_STEPS = 300  # per phase: ~4 s (phase 1) + ~6 s (phase 2) on 2 cores, and enough for the tasks' margins


def _fit_phases(run, dataset: str, steps: int = TASK_STEPS) -> dict:
    """Phase 1 + phase 2 of configs/<dataset> through the CLI, tiny: for the tasks' end-to-end tests."""
    from dsls.cli import main

    common = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
              "--trainer.accelerator=cpu", "--trainer.num_sanity_val_steps=0", f"--trainer.max_steps={steps}",
              f"--run_dir={run}"]
    main(["fit", "--config", f"configs/{dataset}/reconstruction.yaml", *common])
    ae = run / "reconstruction" / "checkpoints" / "last.ckpt"
    main(["fit", "--config", f"configs/{dataset}/adversarial.yaml", f"--model.autoencoder_ckpt={ae}", *common])
    return {"run": run, "ae": str(ae), "adv": str(run / "adversarial" / "checkpoints" / "last.ckpt")}


@pytest.fixture(scope="session")
def fit_phases():
    return _fit_phases


@pytest.fixture(scope="session")
def digits_tiny(tmp_path_factory) -> dict:
    """A tiny digits run (phases 1 and 2, TASK_STEPS each), shared by the inverse-problem and interpolation tests."""
    return _fit_phases(tmp_path_factory.mktemp("digits") / "run", "digits")


# a whole toy pipeline in a few seconds: 12 steps per fit phase, a 20-sample search
TINY_PIPELINE = ["--trainer.logger=false", "--trainer.enable_progress_bar=false",
                 "--trainer.enable_model_summary=false", "--data.train_size=512", "--trainer.max_steps=12",
                 "--trainer.limit_val_batches=0", "--model.num_samples=20", "--model.batch_size=20",
                 "--model.samplers={none: {}, langevin: {steps_per_level: 2}, pc: null, ode: null}"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The run folder of a TINY_PIPELINE run on configs/toy (phases 1 and 2, the search). Tests copy it before they
    change anything in it."""
    from dsls.pipeline import run_pipeline

    run = tmp_path_factory.mktemp("tiny") / "run"
    run_pipeline("configs/toy", TINY_PIPELINE, run_dir=str(run))
    return run
