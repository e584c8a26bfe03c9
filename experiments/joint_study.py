"""Post-hoc vs joint (AAE) phase 2, with and without the D refit: docs/results/joint-mode.md's table. Each data set's phase 1
is trained once and shared by its rows (dsls.ablation.run_variant); the search runs `none` and `langevin`.

    python experiments/joint_study.py [--out runs/joint-study] [--data grid25,ring8,swissroll,digits] [--rows ...]

Writes <out>/joint-study.md and <out>/joint-study.json (one entry per data set and row).
"""
from __future__ import annotations

import argparse
import json
import os

from dsls.ablation import run_variant

TOY = ["--adversarial.trainer.max_steps=3000"]  # the demo profile's phase 2 (configs/toy/demo.yaml)
DATA = {  # name: (config folder, overrides)
    "grid25": ("configs/toy", TOY),
    "ring8": ("configs/toy", [*TOY, "--data.name=ring8"]),
    "swissroll": ("configs/toy", [*TOY, "--data.name=swissroll"]),
    "digits": ("configs/digits", []),
}
JOINT = "--adversarial.model.mode=joint"
EVERY_SIGMA = "--adversarial.model.fool_min_sigma=0"  # the seed's fool term, at every σ
ROWS = {  # name: (what changes, overrides)
    "posthoc": ("E, G frozen; D alone", []),
    "posthoc8000": ("post hoc, 8,000 D steps (the toy config before the demo was sped up)",
                    ["--adversarial.trainer.max_steps=8000"]),
    "joint": ("E, G train against D (fool term at every σ); no refit",
              [JOINT, EVERY_SIGMA, "--adversarial.model.refit_steps=0"]),
    "joint+refit": ("… then D refits on the frozen codes (the last half of the steps)", [JOINT, EVERY_SIGMA]),
    "joint+refit3000": ("joint 1,500 steps, then a refit as long as post hoc's D (3,000)",
                        [JOINT, EVERY_SIGMA, "--adversarial.trainer.max_steps=4500",
                         "--adversarial.model.refit_steps=3000"]),
    "joint+refit3000-scratch": ("… the refit from a fresh D (refit_from=scratch)",
                                [JOINT, EVERY_SIGMA, "--adversarial.trainer.max_steps=4500",
                                 "--adversarial.model.refit_steps=3000", "--adversarial.model.refit_from=scratch"]),
    "joint+refit+adv1": ("adversarial weight 1 (default 0.1)",
                         [JOINT, EVERY_SIGMA, "--adversarial.model.adv_weight=1"]),
    "joint+refit+2D": ("2 D steps per E, G step", [JOINT, EVERY_SIGMA, "--adversarial.model.d_steps_per_ae_step=2"]),
    "joint+refit+lr_ae1e-3": ("E, G at 10x the learning rate", [JOINT, EVERY_SIGMA, "--adversarial.model.lr_ae=1e-3"]),
    "joint+refit+fool0.3": ("no fool term below σ = 0.3, D refit only", [JOINT, "--adversarial.model.refit_decoder=false"]),
    "joint-default": ("the default joint mode: no fool term below σ = 0.3; D and G refit", [JOINT]),
}
COMMON = ["--trainer.logger=false", "--trainer.enable_progress_bar=false",
          "--search.model.samplers={pc: null, ode: null}"]
METRICS = ("modes", "hq_fraction", "rev_kl", "classifier_fid", "class_kl")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/joint-study")
    p.add_argument("--data", default=",".join(DATA), help="comma-separated: " + ", ".join(DATA))
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " + ", ".join(ROWS))
    a = p.parse_args()
    path = os.path.join(a.out, "joint-study.json")
    table = json.load(open(path)) if os.path.isfile(path) else {}
    for data in a.data.split(","):
        config_dir, data_args = DATA[data]
        trained: dict[str, str] = {}  # phase 1 is shared by the rows of one data set
        for row in a.rows.split(","):
            run = os.path.join(a.out, data, row)
            out = run_variant(config_dir, COMMON + data_args + ROWS[row][1], run, trained)
            table[f"{data} | {row}"] = {
                "data": data, "row": row, "change": ROWS[row][0], "seconds": out["seconds"],
                **{f"{s}.{k}": out["results"][s][k] for s in ("none", "langevin") for k in METRICS
                   if k in out["results"][s]}}
            os.makedirs(a.out, exist_ok=True)
            json.dump(table, open(path, "w"), indent=1)
            open(os.path.join(a.out, "joint-study.md"), "w").write(markdown(table))
            print(markdown(table), flush=True)


def markdown(table: dict) -> str:
    cols = [c for c in (f"{s}.{k}" for s in ("none", "langevin") for k in METRICS)
            if any(c in e for e in table.values())]
    lines = ["| data | row | " + " | ".join(cols) + " | phase 2 s |", "|" + " --- |" * (len(cols) + 3)]
    for e in table.values():
        cells = [format(e[c], ".3g") if isinstance(e.get(c), float) else str(e.get(c, "")) for c in cols]
        lines.append(f"| {e['data']} | {e['row']} | " + " | ".join(cells)
                     + f" | {e['seconds'].get('adversarial', 0):.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
