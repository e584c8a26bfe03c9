"""DS-LS: discriminator score-based search in latent space.

Importing dsls first sets OMP_WAIT_POLICY=PASSIVE unless the user set it: OpenMP threads that busy-wait between
parallel regions slow torch about 10x on a machine whose cores are busy (a 200-step toy fit: 82 s instead of 30). The
OpenMP runtime reads it once, when torch loads, so every entry point (the `dsls` command, experiments/*.py) imports
dsls before torch.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
