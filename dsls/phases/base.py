"""What every phase module shares: a phase tag in each checkpoint, a strict loader for it, and the base of the phases
that learn on the codes of a phase-1 autoencoder (D, the latent classifier)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

import lightning as L
import torch

from dsls.checkpoints import load_phase_checkpoint, pending_checkpoints  # noqa: F401  (importable here, as before)
from dsls.data.codes import code_loader, train_views
from dsls.data.loaders import make_loader, unpack
from dsls.errors import CheckpointPending, ConfigError, PhaseCheckpointError  # noqa: F401  (defined there; importable here)
from dsls.noise import SigmaLadder
from dsls.phases.schedules import cosine, warmup_cosine  # noqa: F401  (importable here, as before)

@dataclass(frozen=True)
class LatentNetSettings:
    """The size and optimizer of the nets that read noised codes: D (d_*), the latent score network (s_*) and the
    latent classifier (c_*), each default once, so that a peer has D's size and learning rate unless a config says
    otherwise."""

    hidden: int = 256
    depth: int = 3
    embed_dim: int = 64
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.99)


LATENT_NET = LatentNetSettings()


def init_args(frame_locals: dict) -> dict:
    """An __init__'s arguments, for save_hyperparameters(dict). Explicit, because LightningCLI's recorded args
    would otherwise leak into modules built inside another module's __init__ (the search phase builds phase 2).
    `_class_path` is what LightningCLI reads back from a checkpoint on `--ckpt_path` resume."""
    cls = type(frame_locals["self"])
    args = {k: v for k, v in frame_locals.items() if k not in ("self", "__class__") and not k.startswith("_")}
    return {"_class_path": f"{cls.__module__}.{cls.__qualname__}", **args}


def frozen_from_checkpoint(cls: type, ck: dict, **init_overrides) -> "PhaseModule":
    """A phase module rebuilt from its loaded checkpoint `ck` (hyper-parameters and weights), frozen for inference.
    init_overrides: e.g. autoencoder_ckpt=None, as the saved `autoencoder` hyper-parameters stand in for it."""
    hp = {k: v for k, v in ck["hyper_parameters"].items() if not k.startswith("_")}  # drop CLI bookkeeping
    model = cls(**{**hp, **init_overrides})
    model.load_state_dict(ck["state_dict"])
    model.dataset_name = ck.get("dsls_dataset") or model.dataset_name
    model.datamodule_hparams = ck.get("datamodule_hyper_parameters")  # to find the real data for reference metrics
    return model.eval().requires_grad_(False)


class PhaseModule(L.LightningModule):
    """Tags checkpoints with the phase and the data set they were trained on."""

    phase: str = ""
    dataset_name: str | None = None
    datamodule_hparams: dict | None = None  # the data module a loaded checkpoint was trained with (for its metrics)
    total_steps: int = 1

    def on_train_start(self) -> None:
        self.total_steps = int(self.trainer.estimated_stepping_batches)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and getattr(dm, "dataset_name", None):
            self.dataset_name = dm.dataset_name

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        load_phase_checkpoint(checkpoint_path, cls.phase, flag="checkpoint_path")  # clear error before __init__
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    _train_rng: Optional[dict] = None

    def on_validation_start(self) -> None:
        # Validation draws noise too: keep it off the training stream, so that a run resumed from a checkpoint taken at
        # a validation step (Lightning does not validate that step again) draws the same training noise.
        self._train_rng = {"torch": torch.get_rng_state(),
                           "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def on_validation_epoch_end(self) -> None:  # before ModelCheckpoint's on_validation_end saves the state
        if self._train_rng is not None:
            torch.set_rng_state(self._train_rng["torch"])
            if self._train_rng["cuda"] is not None:
                torch.cuda.set_rng_state_all(self._train_rng["cuda"])
            self._train_rng = None

    def check_weights(self) -> None:
        """Fail on NaN/Inf weights (dsls.phases.finite), so that no checkpoint or DONE stamp hides a diverged phase."""
        from dsls.phases.finite import check_finite_weights

        check_finite_weights(self, f"by step {self.trainer.global_step}" if self._trainer is not None else "")

    def on_train_end(self) -> None:
        self.check_weights()  # the end of a fit, whether or not its last steps were saved

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.check_weights()  # before Lightning writes anything: the previous last.ckpt stays as it was
        checkpoint["dsls_phase"] = self.phase
        checkpoint["dsls_dataset"] = self.dataset_name
        # The noise D trains on comes from the global RNG: keep its state so a resumed run continues the stream.
        checkpoint["dsls_rng"] = {"torch": torch.get_rng_state(),
                                  "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:  # also runs on --ckpt_path resume
        if checkpoint.get("dsls_phase") != self.phase:
            raise PhaseCheckpointError(
                f"cannot resume {type(self).__name__} ({self.phase}) from a {checkpoint.get('dsls_phase')} checkpoint."
            )
        self.dataset_name = checkpoint.get("dsls_dataset")
        rng = checkpoint.get("dsls_rng")
        if rng is not None and self._trainer is not None:  # resuming a fit; a bare load leaves the RNG alone
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])


class LatentPhase(PhaseModule):
    """A phase that learns a function of noised codes E(x) + σε of a phase-1 autoencoder: D (phase 2) and the latent
    classifier. It owns the autoencoder (loaded from autoencoder_ckpt, or rebuilt from the saved `autoencoder`
    hyper-parameters when loading this phase's own checkpoint), the σ ladder (σ_max a buffer, so an auto-chosen value
    travels in the checkpoint) and the σ sampling, so D and the classifier see noise the same way.
    Subclasses call `_init_latent` in __init__, give their `latent_net` and may override `autoencoder_frozen`."""

    autoencoder_sources: tuple[str, ...] = ("reconstruction",)
    # (the σ ladder's defaults, shared by D and the classifier: dsls.noise.LATENT_LADDER)

    def _init_latent(self, autoencoder_ckpt: Optional[str], autoencoder: Optional[dict],
                     sigma_max: Optional[float]) -> dict:
        """Builds self.autoencoder and the σ_max buffer; returns the autoencoder's hyper-parameters (to save).
        From a phase-2 checkpoint (where autoencoder_sources allows it) the autoencoder is phase 2's, which joint mode
        has fine-tuned, and σ_max=None takes phase 2's σ_max: the same codes and the same ladder as D."""
        from dsls.nets.autoencoder import autoencoder_from_hparams

        state = None
        if autoencoder is None:
            ckpt = load_phase_checkpoint(autoencoder_ckpt, self.autoencoder_sources, flag="--model.autoencoder_ckpt")
            hp = ckpt["hyper_parameters"]
            autoencoder = dict(hp["autoencoder"] if ckpt["dsls_phase"] == "adversarial" else hp,
                               dataset_name=ckpt.get("dsls_dataset"))
            state = {k[len("autoencoder."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("autoencoder.")}
            self._phase_1_data = ckpt.get("datamodule_hyper_parameters")  # what its codes were trained on (setup)
            if ckpt["dsls_phase"] == "adversarial" and sigma_max is None:
                sigma_max = float(ckpt["state_dict"]["sigma_max"])
        self.dataset_name = autoencoder.get("dataset_name")
        self.autoencoder = autoencoder_from_hparams(autoencoder)
        if state is not None:
            self.autoencoder.load_state_dict(state)
        self.register_buffer("sigma_max", torch.tensor(float("nan") if sigma_max is None else sigma_max))
        if self.autoencoder_frozen:
            self.autoencoder.requires_grad_(False).eval()
        return autoencoder

    @property
    def autoencoder_frozen(self) -> bool:
        return True

    _phase_1_data: Optional[dict] = None
    SAME_DATA = ("name", "classes", "exclude_classes", "val_fraction", "test_fraction", "split_seed")  # which examples

    def _warn_other_data(self, data: Optional[dict]) -> None:
        """A warning when this phase's data module selects other examples than the autoencoder's did (another class
        selection or split): the codes, σ_max and D's ladder would then not be those of the autoencoder's run."""
        before = self._phase_1_data or {}
        differ = [k for k in self.SAME_DATA if data is not None and k in before and k in data and before[k] != data[k]]
        if differ:
            import warnings

            warnings.warn("this phase's data differ from the autoencoder's run in " + ", ".join(
                f"--data.{k}={data[k]!r} (phase 1: {before[k]!r})" for k in differ) + ": pass phase 1's data "
                "settings (the pipeline does) unless this is meant", stacklevel=2)

    @property
    def ladder(self) -> SigmaLadder:
        return SigmaLadder(self.sigma_max.item(), self.hparams.sigma_min, self.hparams.num_levels)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.autoencoder.latent_dim,)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(z)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.autoencoder_frozen:
            self.autoencoder.eval()  # frozen: its running code statistics must not move either
        return self

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None)
        shape = getattr(dm, "data_shape", None)
        if shape is not None and tuple(shape) != tuple(self.autoencoder.data_shape):
            raise ConfigError(f"the data is {list(shape)} but the autoencoder was trained on "
                              f"{list(self.autoencoder.data_shape)}: use the phase-1 data settings (--data.*)")
        self._warn_other_data(getattr(dm, "hparams", None))
        if stage == "fit" and dm is not None:
            # Lightning asks a fit's data module for the train loader, never its LightningModule (2.6: data_connector's
            # attach_datamodule): point the fit loop at train_dataloader below, which serves the data module's batches
            # or, cached, their codes. Every fit attaches its data afresh, so nothing needs putting back.
            self.trainer.fit_loop._data_source.instance = self

    # -- the training batches: the data module's, or the codes of its examples, encoded once -----------------------
    caches_codes = False  # a phase that trains on the codes alone may set it (post-hoc D): see train_dataloader
    train_codes: Optional[torch.Tensor] = None  # this fit's cached codes (on_fit_start), or None: batches of data

    @property
    def batches_are_codes(self) -> bool:
        return self.train_codes is not None

    def train_dataloader(self):
        """This fit's training batches: the data module's own, or, when the codes are cached, the rows of train_codes
        in the batches and the order the data module draws its examples in (dsls.data.codes.code_loader). The data
        module is left as it is."""
        loader = self.trainer.datamodule.train_dataloader()
        return loader if self.train_codes is None else code_loader(loader, self.train_codes)

    @torch.no_grad()
    def encode_train_views(self) -> torch.Tensor:
        """The frozen encoder's code of every training example under every augmented view the data module names
        (dsls.data.codes.train_views: the plain set, plus its mirror image when it flips at random), on the CPU. Under
        DDP every rank encodes the whole set."""
        dm, t0 = self.trainer.datamodule, time.perf_counter()
        views = train_views(dm)
        batch, workers = 2 * dm.hparams.get("batch_size", 128), dm.hparams.get("num_workers", 0)  # fits where it trains
        was_training = self.autoencoder.training
        self.autoencoder.eval()  # measuring, not training: leave the running code statistics alone
        codes = torch.cat([self.autoencoder.encode(unpack(b).to(self.device), sample=False).cpu() for view in views
                           for b in make_loader(view, batch, False, num_workers=workers)])
        self.autoencoder.train(was_training)
        self.print(f"cached {len(codes)} codes ({len(views)} view{'s' * (len(views) > 1)} of the training set) in "
                   f"{time.perf_counter() - t0:.1f} s")
        return codes

    @torch.no_grad()
    def on_fit_start(self) -> None:
        """Caches the codes (caches_codes, while the encoder is frozen), then reads σ_max and the net's input scale
        from the first training codes, unless resuming (they come from the checkpoint)."""
        dm = self.trainer.datamodule
        if dm is None:
            raise ValueError(f"{type(self).__name__} reads code statistics from the datamodule: fit with datamodule=…")
        if self.caches_codes and self.autoencoder_frozen and hasattr(dm, "train_set"):
            self.train_codes = self.encode_train_views()  # once, instead of at every step
        if self.trainer.ckpt_path is not None:
            return  # resumed: σ_max and the code statistics come from the checkpoint
        was_training = self.autoencoder.training
        self.autoencoder.eval()  # measuring, not training: leave the running code statistics alone
        batches = [self.code_sample(b.to(self.device)) if self.batches_are_codes
                   else self.autoencoder.encode(unpack(b).to(self.device))
                   for b, _ in zip(self.train_dataloader(), range(8))]  # the first batches this fit trains on
        codes = torch.cat(batches)[:2048]
        self.autoencoder.train(was_training)
        smax = self.trainer.strategy.reduce(torch.cdist(codes, codes).max(), reduce_op="max")
        self.on_codes(codes)
        if not math.isnan(self.sigma_max.item()):
            return
        self.sigma_max.fill_(float(smax))
        self.print(f"auto sigma_max = {self.sigma_max.item():.4g} (largest pairwise code distance); {self.ladder}")

    def teardown(self, stage: str) -> None:
        self.train_codes = None  # the codes belong to the fit that encoded them

    def code_sample(self, z: torch.Tensor) -> torch.Tensor:
        """A code from cached encoder means: a stochastic encoder's noise is drawn afresh each time."""
        noise = self.autoencoder.code_noise
        return z + noise * torch.randn_like(z) if noise > 0 else z

    @property
    def latent_net(self) -> torch.nn.Module:
        """The noise-conditional net that reads the codes (D, the classifier)."""
        raise NotImplementedError

    def on_codes(self, codes: torch.Tensor) -> None:
        """Once before training, with up to 2048 training codes: the net's input scaling reads their variance."""
        var = self.trainer.strategy.reduce(codes.var(0).mean(), reduce_op="mean")
        self.latent_net.code_var.fill_(float(var))

    def log_train(self, metrics: dict) -> None:
        """Training metrics on the logger's steps (and the first and last) only: a self.log call costs about as much as
        a small D step."""
        t, step = self.trainer, self.global_step + 1  # the step being taken
        every = t.log_every_n_steps
        if t.fast_dev_run or step == 1 or step >= self.total_steps or (every and step % every == 0):
            self.log_dict(metrics, prog_bar=True, on_step=True, on_epoch=False)

    def noisy(self, z: torch.Tensor):
        """(z + σε, σ, ε) with σ drawn per row from the ladder by the phase's sigma_sampling."""
        sigma = self.ladder.sample(z.shape[0], self.hparams.sigma_sampling, device=z.device)
        noise = torch.randn_like(z)
        return z + sigma.unsqueeze(-1) * noise, sigma, noise
