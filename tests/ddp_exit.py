"""Imported by the tests/ddp_*_script.py scripts: end a gloo DDP run cleanly."""
import torch.distributed as dist


def destroy_process_group(trainer) -> None:
    """Wait for every rank, then tear the gloo process group down while the interpreter is still whole.

    Lightning destroys only NCCL groups at exit. A gloo group left to interpreter shutdown can abort the process
    ("terminate called without an active exception", rc -6): its worker threads still hold work whose tensors
    reference Python objects (pytorch/pytorch#179291). The barrier keeps one rank from closing its connections
    while the other is still in a collective.
    """
    trainer.strategy.barrier("ddp_exit")
    if dist.is_initialized():
        dist.destroy_process_group()
