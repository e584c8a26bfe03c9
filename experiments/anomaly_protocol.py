"""The one-class-out anomaly protocol: for each held-out digit and seed, train phases 1 and 2 without that class
(--data.exclude_classes=[k]), score the test images (--task anomaly: the normal test images and every image of the
held-out class, from the train and the test split), then print the anchors' AUPRC table with dsls's rows added (each
score's AUPRC, mean ± std over seeds) and the base rates.

    python experiments/anomaly_protocol.py                                  # digits 1 4 5 7 9, seeds 0 1 2
    python experiments/anomaly_protocol.py --config-dir configs/digits --seeds 0 --trainer.max_steps=2000
    python experiments/anomaly_protocol.py --config-dir configs/mnist --profile cpu --digits 9 1 --seeds 0

Runs go to <runs-root>/digit<k>-seed<s> (default runs/anomaly-<config-dir name>); a run that is there already is
resumed (finished phases are skipped) and a scored one is read back, so an interrupted protocol continues where it
stopped. Other arguments are the pipeline's overrides (--trainer.max_steps=..., --adversarial.model.X=...). Data
modules with a test_fraction setting (digits, image folders) get --test-fraction (0.2) so that there is a test split;
MNIST and CIFAR-10 have their own. The summary goes to <runs-root>/anomaly_protocol.json.
"""
from __future__ import annotations

import argparse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--config-dir", default="configs/digits")
    p.add_argument("--digits", type=int, nargs="+", default=[1, 4, 5, 7, 9], help="the classes held out, one at a time")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (--seed_everything)")
    p.add_argument("--runs-root", default=None, help="default: runs/anomaly-<config-dir name>")
    p.add_argument("--profile", default=None, help="a settings file of the config folder, e.g. cpu (configs/mnist)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="the test split of data modules that take --data.test_fraction (digits)")
    p.add_argument("--scores", default=None, help="anomaly score kinds, comma-separated (default: the task's)")
    args, overrides = p.parse_known_args()
    import json
    import os
    import time
    from pathlib import Path

    from dsls.cli import one_line_errors
    from dsls.pipeline import PHASES, run_pipeline
    from dsls.profiles import profile_overrides
    from dsls.tasks.anomaly import data_takes, protocol_table, row_name
    from dsls.tasks.registry import run_task

    phases = PHASES[:2]  # reconstruction, adversarial: the anomaly task needs no search
    root = args.runs_root or os.path.join("runs", f"anomaly-{Path(args.config_dir).name}")
    extra = [f"--data.test_fraction={args.test_fraction}"] if data_takes(args.config_dir, "test_fraction") else []
    summary, rows, base = {}, {}, {}
    with one_line_errors():
        if args.profile:
            overrides = profile_overrides(args.config_dir, args.profile, [ph for ph, _ in phases]) + overrides
        for k in args.digits:
            for seed in args.seeds:
                run_dir = os.path.join(root, f"digit{k}-seed{seed}")
                scored = os.path.join(run_dir, "anomaly", "results.json")
                t0 = time.time()
                if os.path.isfile(scored):
                    entry = json.loads(Path(scored).read_text())["anomaly"]
                else:
                    out = run_pipeline(args.config_dir, [f"--data.exclude_classes=[{k}]", f"--seed_everything={seed}",
                                                         *extra, *overrides],
                                       run_dir=run_dir, resume=os.path.isdir(run_dir), phases=phases)
                    scores = args.scores.split(",") if args.scores else None
                    entry = run_task("anomaly", out["checkpoints"]["adversarial"], os.path.join(run_dir, "anomaly"),
                                     scores=scores)["entry"]
                summary[f"digit{k}-seed{seed}"] = entry
                base.setdefault(k, []).append(entry["base_rate"])
                for name, r in entry["scores"].items():
                    rows.setdefault(f"dsls {row_name(name, entry)}", {}).setdefault(k, []).append(r["auprc"])
                print(f"digit {k}, seed {seed}: {entry['default_score']} AUPRC "
                      f"{entry['scores'][entry['default_score']]['auprc']:.3f} (base rate {entry['base_rate']:.3f}), "
                      f"{time.time() - t0:.0f} s", flush=True)
    os.makedirs(root, exist_ok=True)
    Path(root, "anomaly_protocol.json").write_text(json.dumps(summary, indent=1))
    print(f"\nAUPRC with one digit held out ({args.config_dir}; dsls: mean ± std over seeds {args.seeds}):\n")
    print(protocol_table({**rows, "base rate (dsls's test sets)": base}, args.digits))
    print(f"\nruns and their anomaly/ folders: {root}; summary: {root}/anomaly_protocol.json")


if __name__ == "__main__":
    main()
