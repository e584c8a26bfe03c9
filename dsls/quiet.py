"""The known messages every run would print and that say nothing about this run, silenced in one place.

Imported by dsls.cli (every command goes through it). Each filter matches one exact message, or one library's calls
into another; the warnings whose cause is ours are fixed where they arise instead (dsls.cli: Lightning's "args and
command line" warning, our own use of jsonargparse's deprecated `skip_none`, W&B's `anonymous` and "git root … does
not exist" warnings, and the "…will reuse this run" warning, by one W&B run per phase; Lightning's `sync_dist`
advice, by sync_dist=True on the phases' epoch-level logs; torch's deprecation of the autograd all_gather, by
dsls.distributed.all_gather).
"""
from __future__ import annotations

import logging
import warnings

# warnings.filterwarnings arguments, each with why it is safe to hide
WARNINGS = [
    # Lightning 2.6's own _pytree.py uses torch's deprecated LeafSpec (torch >= 2.10): nothing to change on our side
    (dict(message=r"`isinstance\(treespec, LeafSpec\)` is deprecated"), "Lightning's code"),
    # LightningCLI calls jsonargparse APIs deprecated in jsonargparse 4.49 (dump's skip_none, add_instantiator,
    # instantiate_classes), and jsonargparse attributes them to lightning/pytorch/cli.py
    (dict(category=DeprecationWarning, module=r"lightning\.pytorch\.cli"), "Lightning's calls"),
    # phase 2 trains D on a frozen autoencoder, in eval mode on purpose
    (dict(message=r"Found \d+ module\(s\) in eval mode at the start of training"), "the frozen autoencoder"),
    # phase 2's manual optimization: the state after the step is the one to resume from (tests/test_resume.py)
    (dict(message=r"Using ModelCheckpoint with manual optimization and every_n_train_steps"), "phase 2's checkpoints"),
    # an epoch shorter than log_every_n_steps (digits: 11 batches, a 20-step interval): Lightning counts that interval
    # in steps over the whole fit, not per epoch, so the logs still come every n steps; lowering it would only add logs
    (dict(message=r"The number of training batches \(\d+\) is smaller than the logging interval"), "step-counted logs"),
]

# rank_zero_info lines of Lightning that advertise its cloud services (litlogger, litmodels), once per Trainer
ADVERTS = ("💡 Tip: For seamless cloud",)
LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ADVERTS)


def install() -> None:
    """Add the filters (idempotent: warnings.filterwarnings and the logger filter replace their earlier copies)."""
    for kwargs, _why in WARNINGS:
        warnings.filterwarnings("ignore", **kwargs)
    for name in LIGHTNING_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropAdverts) for f in log.filters):
            log.addFilter(_DropAdverts())


install()
