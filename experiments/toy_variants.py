"""The D-recipe study behind docs/results/recipe.md's table: each variant is the demo pipeline with a few
overrides, same seeds and sample count. Phases whose overrides match an earlier variant are reused.

    python experiments/toy_variants.py [--out runs/toy/variants] [--only name,name]

Writes <out>/variants.md and <out>/variants.json.
"""
from __future__ import annotations

import argparse
import json
import os

from dsls.ablation import run_variant

BCE = "--adversarial.model.score_matching_weight=0"
LOGU = "--adversarial.model.sigma_sampling=loguniform"
LANGEVIN = "--search.model.samplers.langevin."  # + setting=value
VARIANTS = {  # name: (what changes, overrides)
    "default": ("BCE + DSM(1) on ∇logit, σ low-biased, 8k D steps, eps0 5e-4, T 10, denoise", []),
    "loguniform": ("σ drawn log-uniformly in training", [LOGU]),
    "bce": ("pure BCE discriminator (no DSM term)", [BCE]),
    "bce-loguniform": ("pure BCE, σ log-uniform (the naive recipe)", [BCE, LOGU]),
    "bce-loguniform-proto-step": ("… and the prototype's step, eps0 1.8e-4", [BCE, LOGU, LANGEVIN + "eps0=1.8e-4"]),
    "dsm-4k": ("4k D steps", ["--adversarial.trainer.max_steps=4000"]),
    "no-denoise": ("no final Tweedie step", [LANGEVIN + "denoise=false"]),
    "T20": ("T = 20 steps per level", [LANGEVIN + "steps_per_level=20"]),
    "init-prior": ("search starts at N(0, I), not N(0, (1+σ_max²)I)", [LANGEVIN + "init=prior"]),
    "no-input-scaling": ("D sees raw z (no c_in = 1/sqrt(var+σ²))", ["--adversarial.model.input_scaling=false"]),
    "sigma-levels": ("σ drawn from the 10 levels", ["--adversarial.model.sigma_sampling=levels"]),
    "sigma-min-0.01": ("σ_min = 0.01 (eps0 scaled to keep α/σ²)",
                       ["--adversarial.model.sigma_min=0.01", LANGEVIN + "eps0=5.6e-5"]),
    "joint": ("joint (AAE) mode: E, G also train against D", ["--adversarial.model.mode=joint"]),
    "spectral-norm": ("spectral norm on D's layers", ["--adversarial.model.spectral_norm=true"]),
    "latent-8": ("latent d = 8 > intrinsic 2", ["--reconstruction.model.latent_dim=8"]),
    "latent-8-bce": ("latent d = 8, pure BCE", ["--reconstruction.model.latent_dim=8", BCE]),
    "no-latent-norm": ("codes not standardised in phase 1", ["--reconstruction.model.normalize_latent=false"]),
}
COMMON = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-dir", default="configs/toy")
    p.add_argument("--out", default="runs/toy/variants")
    p.add_argument("--only", default="", help="comma-separated variant names")
    a = p.parse_args()
    table_path = os.path.join(a.out, "variants.json")
    table = json.load(open(table_path)) if os.path.isfile(table_path) else {}
    trained: dict[str, str] = {}  # phase arguments → phase folder, to reuse trained phases
    names = a.only.split(",") if a.only else list(VARIANTS)
    for name in names:
        desc, extra = VARIANTS[name]
        out = run_variant(a.config_dir, COMMON + extra, os.path.join(a.out, name), trained)
        r = out["results"]["langevin"]
        table[name] = {"change": desc, **{k: r[k] for k in ("modes", "hq_fraction", "rev_kl", "seconds_per_sample")},
                       "none_hq": out["results"]["none"]["hq_fraction"], "seconds": out["seconds"]}
        os.makedirs(a.out, exist_ok=True)
        json.dump(table, open(table_path, "w"), indent=1)
        lines = ["variant | change | modes | hq_fraction | rev_kl", "--- | --- | --- | --- | ---"]
        lines += [f"{n} | {t['change']} | {t['modes']} | {t['hq_fraction']:.3f} | "
                  f"{'n/a' if t['rev_kl'] is None else format(t['rev_kl'], '.3f')}" for n, t in table.items()]
        open(os.path.join(a.out, "variants.md"), "w").write("\n".join(lines) + "\n")
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
