"""Run by tests/test_ddp.py in a subprocess: DDP on CPU (gloo) must be launched from a script file."""
import sys

import lightning as L

from dsls.phases.search import LatentSearchModule

from ddp_exit import destroy_process_group  # tests/ddp_exit.py, beside this script

SAMPLERS = {"none": {}, "langevin": {"steps_per_level": 2}}  # test_ddp.py runs the same search on one process

if __name__ == "__main__":
    ckpt, out_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = LatentSearchModule(ckpt=ckpt, num_samples=n, batch_size=16, samplers=SAMPLERS, out_dir=out_dir)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", inference_mode=False, logger=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.predict(model, return_predictions=False)
    destroy_process_group(trainer)
