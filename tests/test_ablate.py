"""dsls.ablation (experiments/ablate.py): one command, one table, on the toy and digits configs with tiny settings."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from dsls.ablation import ablate, matched_budget

EPS0 = "--search.model.samplers.langevin.eps0="
TINY = ["--trainer.max_steps=30", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.val_check_interval=15", "--search.model.num_samples=64", "--search.model.batch_size=32",
        EPS0 + "1e-4"]  # 30 training steps leave rough scores: smaller steps keep every row finite
SAMPLERS = ["langevin", "pc", "ode"]  # the search configs' samplers besides none
ROWS = (["no search"] + [f"DS-LS, {n}" for n in SAMPLERS] + [f"latent DSM score, {n}" for n in SAMPLERS]
        + ["NCP-VAE D, langevin at σ_min"]
        + [f"discriminator guidance w={w}, {n}" for w in ("0.5", "1", "2") for n in SAMPLERS]
        + ["pixel NCSN, same steps", "pixel NCSN, matched wall time"])


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
def test_peer_table(tmp_path, dataset, metric):
    out = ablate(f"configs/{dataset}", TINY, str(tmp_path / "run"))
    rows = {r["row"]: r for r in out["rows"]}
    expected = ROWS[:-2] + (["floor (reconstructions)"] if dataset != "toy" else []) + ROWS[-2:]
    assert [r for r in rows if r != "floor (reconstructions)"] == [r for r in expected if r in ROWS]
    assert all(metric in r and ("seconds_per_sample" in r or r["row"].startswith("floor")) for r in rows.values())
    # every row's samples are in the table's folder, named by ablation.json, and give its figures back
    saved = json.loads(Path(out["out_dir"], "ablation.json").read_text())
    assert [r["row"] for r in saved["rows"]] == list(rows)
    for r in saved["rows"]:
        x = np.load(Path(out["out_dir"], r["npz"]))["x"]
        assert len(x) == 64 and np.isfinite(x).all(), r["row"]
    if dataset == "toy":  # the mode metrics recomputed from the npz files are the table's
        from dsls.metrics.toy import toy_metrics

        for r in saved["rows"]:
            assert toy_metrics(np.load(Path(out["out_dir"], r["npz"]))["x"], "grid25")[metric] == r[metric]
    lang = rows["DS-LS, langevin"]
    assert lang["sampler_settings"]["eps0"] == 1e-4  # the override reached the sampler
    assert rows["no search"]["nfe"] == 0 and rows["no search"]["train_steps_x_batch"] is None
    # the same second-stage budget (steps × batch) for D, s_θ and NCP-VAE's D; DG's is s_θ's plus D_g's
    budget = rows["DS-LS, langevin"]["train_steps_x_batch"]
    assert budget > 0 and rows["latent DSM score, ode"]["train_steps_x_batch"] == budget
    assert rows["NCP-VAE D, langevin at σ_min"]["train_steps_x_batch"] == budget
    assert rows["discriminator guidance w=1, pc"]["train_steps_x_batch"] == 2 * budget
    dg, score, ds = (rows[f"{r}, pc"]["parameters"] for r in ("discriminator guidance w=1", "latent DSM score", "DS-LS"))
    assert dg == score + ds > score > 0  # D_g (D's size) and the s_θ it holds, counted once
    ncp = rows["NCP-VAE D, langevin at σ_min"]
    assert ncp["settings"]["num_levels"] == 1 and ncp["sampler_settings"]["init"] == "prior"
    assert ncp["nfe"] == rows["DS-LS, langevin"]["nfe"]  # the same total number of steps, all at σ_min
    assert rows["discriminator guidance w=2, ode"]["settings"]["dg_scale"] == 2
    m = rows["pixel NCSN, matched wall time"]
    assert m["nfe"] == m["settings"]["num_levels"] * m["sampler_settings"]["steps_per_level"] + int(
        m["sampler_settings"]["denoise"])
    table = Path(out["out_dir"], "ablation.md").read_text()
    assert all(r in table for r in rows) and metric in table and "latent DSM score's best" in table
    for phase in ("reconstruction", "adversarial", "latent_score", "pixel_ncsn", "peers/ncp/adversarial",
                  "peers/dg/adversarial"):
        assert (tmp_path / "run" / phase / "DONE").is_file()
    if dataset != "toy":
        assert rows["floor (reconstructions)"]["classifier_recall"] >= 0
        # the same run's checkpoints, tuned: every model gets the same grid, and the rule picks one point per sampler
        from dsls.tuning import tune

        grid = {"ode": [{"steps": 4}, {"steps": 8}], "langevin": [{"steps_per_level": 2}]}
        tuned = tune(f"configs/{dataset}", str(tmp_path / "run"), TINY, grid=grid)
        models = {(r["model"], r["sampler"]) for r in tuned["rows"]}
        assert ("latent DSM score", "ode") in models and ("DS-LS", "langevin") in models
        assert ("NCP-VAE D", "langevin") in models and ("NCP-VAE D", "ode") not in models
        assert len(tuned["rows"]) == 3 * 3 + 1 and tuned["floor"]["classifier_recall"] >= 0
        assert {(c["model"], c["sampler"]) for c in tuned["chosen"]} == models
        assert Path(tuned["out_dir"], "tuning.md").is_file()
        return
    # a second call reuses the trained checkpoints (no phase is fitted again); a row whose sampler diverges is
    # reported as such and the others are kept
    phases = ("adversarial", "pixel_ncsn", "latent_score", "peers/dg/adversarial")
    before = {p: os.path.getmtime(tmp_path / "run" / p / "checkpoints/last.ckpt") for p in phases}
    again = ablate(f"configs/{dataset}", TINY + [EPS0 + "1e4"], str(tmp_path / "run"))
    assert before == {p: os.path.getmtime(tmp_path / "run" / p / "checkpoints/last.ckpt") for p in before}
    again_rows = {r["row"]: r for r in again["rows"]}
    assert "error" not in again_rows["no search"] and metric in again_rows["no search"]
    assert "diverged" in again_rows["DS-LS, langevin"]["error"] and "diverged" in again["table"]
    assert "error" not in again_rows["DS-LS, ode"]  # another sampler of the same search keeps its row


def test_tuning_rule_keeps_recall():
    from dsls.tuning import pick

    rows = [{"classifier_fid": 10.0, "classifier_recall": 0.5}, {"classifier_fid": 20.0, "classifier_recall": 0.8},
            {"classifier_fid": 30.0, "classifier_recall": 0.9}]
    assert pick(rows, floor_recall=0.82) is rows[1]  # the lowest FID that keeps recall >= 0.82 - 0.05
    assert pick(rows, floor_recall=0.5) is rows[0]
    assert pick(rows, floor_recall=0.99) is rows[2]  # none keeps it: the highest recall
    tie = rows + [{"classifier_fid": 25.0, "classifier_recall": 0.9}]
    assert pick(tie, floor_recall=0.99) is tie[3]  # of equal recall, the lower FID
    assert pick([{"rev_kl": 0.3}, {"rev_kl": 0.1}], None) == {"rev_kl": 0.1}  # toy data


def test_the_sentences_do_not_call_noise_a_win():
    from dsls.ablation import compare, verdicts

    assert compare(48.34, 48.38, min) == "about the same" and compare(37.5, 48.8, min) == "better"
    assert compare(0.90, 0.99, max) == "worse"
    rows = [{"row": "DS-LS, pc", "classifier_fid": 37.8}, {"row": "latent DSM score, pc", "classifier_fid": 48.8},
            {"row": "discriminator guidance w=1, pc", "classifier_fid": 48.7}]
    said = "\n".join(verdicts(rows))
    assert "better than the latent DSM score's best" in said and "changed little for its s_θ with pc" in said
