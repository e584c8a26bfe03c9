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


def _fit_quick(model, steps: int, path, **data) -> str:
    """Fit `model` for `steps` steps on 1024 toy points (data: more Toy2DDataModule settings, e.g. labels=True) and
    save its checkpoint at `path`."""
    import lightning as L

    from dsls.data import Toy2DDataModule

    t = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0, limit_val_batches=0)
    t.fit(model, datamodule=Toy2DDataModule(train_size=1024, batch_size=128, **data))
    t.save_checkpoint(path)
    return str(path)


@pytest.fixture(scope="session")
def toy_adv_ckpt(tmp_path_factory) -> str:
    """A tiny phase-2 checkpoint on the toy data (5 steps of each phase): for tests of the search's plumbing,
    not of its quality."""
    from dsls.phases.adversarial import AdversarialModule
    from dsls.phases.reconstruction import ReconstructionModule

    import torch

    torch.manual_seed(0)  # the same tiny model in every session: tests that read its samples see the same ones
    d = tmp_path_factory.mktemp("toy-ckpt")
    ae = _fit_quick(ReconstructionModule(latent_dim=2, hidden=16, depth=1), 5, d / "ae.ckpt")
    return _fit_quick(AdversarialModule(autoencoder_ckpt=ae, d_hidden=16, d_depth=1), 5, d / "adv.ckpt")


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
