"""dsls.ablation (experiments/ablate.py): one command, one table, on the toy and digits configs with tiny settings."""
import json
import os
from pathlib import Path

import pytest

from dsls.ablation import ablate, matched_budget

EPS0 = "--search.model.samplers.langevin.eps0="
TINY = ["--trainer.max_steps=30", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.val_check_interval=15", "--search.model.num_samples=64", "--search.model.batch_size=32",
        EPS0 + "1e-4"]  # 30 training steps leave rough scores: smaller steps keep every row finite
ROWS = ["no search", "DS-LS, single σ (σ_min)", "DS-LS, annealed", "pixel NCSN, same steps",
        "pixel NCSN, matched wall time"]


def test_matched_budget_spends_the_given_time():
    # one pixel evaluation costs 0.01 s: 0.2 s buys 20 evaluations = the denoise step + 19 Langevin steps, of which
    # 9 levels × 2 fit (equal steps per level)
    assert matched_budget(0.2, pixel_seconds=1.01, pixel_nfe=101, levels=10) == \
        {"num_levels": 9, "steps_per_level": 2, "denoise": True}
    assert matched_budget(0.7, 1.0, 10, 10) == {"num_levels": 6, "steps_per_level": 1, "denoise": True}  # 7 evals
    assert matched_budget(1.01, 1.01, 101, 10) == {"num_levels": 10, "steps_per_level": 10, "denoise": True}
    assert matched_budget(0.001, 1.01, 101, 10) == {"num_levels": 1, "steps_per_level": 1, "denoise": False}


@pytest.mark.slow
@pytest.mark.parametrize("dataset, metric", [("toy", "hq_fraction"), ("digits", "classifier_fid")])
def test_ablation_table(tmp_path, dataset, metric):
    out = ablate(f"configs/{dataset}", TINY, str(tmp_path / "run"))
    rows = {r["row"]: r for r in out["rows"]}
    assert list(rows) == ROWS
    assert all(metric in r and "seconds_per_sample" in r for r in rows.values())
    annealed = rows["DS-LS, annealed"]["settings"]
    levels, steps = annealed["num_levels"], annealed["samplers"]["langevin"]["steps_per_level"]
    assert annealed["samplers"]["langevin"]["eps0"] == 1e-4  # the override reached the sampler
    assert rows["no search"]["nfe"] == 0 and rows["no search"]["settings"]["samplers"] == {"none": {}}
    assert rows["DS-LS, annealed"]["nfe"] == rows["pixel NCSN, same steps"]["nfe"] == levels * steps + 1
    assert rows["DS-LS, single σ (σ_min)"]["nfe"] == levels * steps + 1  # the same budget, all at σ_min
    single = rows["DS-LS, single σ (σ_min)"]["settings"]
    assert single["num_levels"] == 1 and single["samplers"]["langevin"]["init"] == "prior"
    m = rows["pixel NCSN, matched wall time"]
    lang = m["settings"]["samplers"]["langevin"]
    assert m["nfe"] == m["settings"]["num_levels"] * lang["steps_per_level"] + int(lang["denoise"])
    # every row from one set of checkpoints, written beside them
    table = Path(out["out_dir"], "ablation.md").read_text()
    assert all(r in table for r in ROWS) and metric in table
    saved = json.loads(Path(out["out_dir"], "ablation.json").read_text())
    assert [r["row"] for r in saved["rows"]] == ROWS
    for phase in ("reconstruction", "adversarial", "pixel_ncsn"):
        assert (tmp_path / "run" / phase / "DONE").is_file()
    if dataset != "toy":
        return
    # a second call reuses the trained checkpoints (no phase is fitted again); a row whose sampler diverges is
    # reported as such and the others are kept
    before = {p: os.path.getmtime(tmp_path / "run" / p / "checkpoints/last.ckpt") for p in ("adversarial", "pixel_ncsn")}
    again = ablate(f"configs/{dataset}", TINY + [EPS0 + "1e4"], str(tmp_path / "run"))
    assert before == {p: os.path.getmtime(tmp_path / "run" / p / "checkpoints/last.ckpt") for p in before}
    assert "error" not in again["rows"][0] and metric in again["rows"][0]
    assert all("diverged" in r["error"] for r in again["rows"][1:4]) and "diverged" in again["table"]
