"""Resume: fit 2 epochs in one go, or fit 1 epoch, stop, and resume from the checkpoint for the second.
The final weights must agree: data order, optimizer, schedule and the noise RNG all continue."""
import lightning as L
import pytest
import torch

from dsls.data import Toy2DDataModule
from dsls.phases.adversarial import AdversarialModule
from dsls.phases.reconstruction import ReconstructionModule


class StopAfterFirstEpoch(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True  # the "kill": same max_epochs, so the LR schedule is the same


def trainer(**kw):
    return L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, accelerator="cpu", limit_val_batches=0, **kw)


def data():
    return Toy2DDataModule(train_size=1024, batch_size=128, seed=3)


def fit_both_ways(make_model, tmp_path):
    L.seed_everything(0)
    straight = make_model()
    trainer().fit(straight, datamodule=data())

    L.seed_everything(0)
    first = make_model()
    t = trainer(callbacks=[StopAfterFirstEpoch()])
    t.fit(first, datamodule=data())
    assert t.current_epoch == 1
    ckpt = tmp_path / "epoch1.ckpt"
    t.save_checkpoint(ckpt)

    torch.manual_seed(12345)  # a fresh process would start from another RNG state: the checkpoint must restore it
    resumed = make_model()
    trainer().fit(resumed, datamodule=data(), ckpt_path=str(ckpt))
    return straight.state_dict(), resumed.state_dict()


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_resume_reconstruction(tmp_path):
    assert_same(*fit_both_ways(lambda: ReconstructionModule(latent_dim=2, hidden=32, depth=2), tmp_path))


@pytest.mark.parametrize("mode", ["posthoc", "joint"])
def test_resume_adversarial(tmp_path, mode):
    L.seed_everything(0)
    t = L.Trainer(max_steps=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, limit_val_batches=0)
    t.fit(ReconstructionModule(latent_dim=2, hidden=16, depth=1), datamodule=data())
    ae = tmp_path / "ae.ckpt"
    t.save_checkpoint(ae)
    make = lambda: AdversarialModule(autoencoder_ckpt=str(ae), mode=mode, d_hidden=16, d_depth=2,  # noqa: E731
                                     score_matching_weight=1.0)
    straight, resumed = fit_both_ways(make, tmp_path)
    assert_same(straight, resumed)
