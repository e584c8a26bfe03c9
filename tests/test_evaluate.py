"""experiments/evaluate.py --likelihood (dsls.tasks.likelihood) end to end on a tiny toy checkpoint: the
likelihood.json contract (docs/tasks.md), reuse of the searched samples, and the exact value when q = p."""
import json
import math
import os
import runpy
import sys

import pytest
import torch

from dsls.errors import PhaseCheckpointError
from dsls.errors import TaskError
from dsls.noise import gaussian_log_prob
from dsls.tasks.evaluate import evaluate
from dsls.tasks.likelihood import load_latent_model, log_prob_summary

ENTRY = {"mean_log_prob", "nats_per_dim", "n", "nfe"}
SEARCH = ["--model.num_samples=24", "--model.batch_size=24", "--model.samplers.langevin.steps_per_level=2",
          "--trainer.accelerator=cpu"]


def test_likelihood_json_contract(toy_adv_ckpt, tmp_path, monkeypatch, capsys):
    # a bare Trainer's checkpoint records the data module's settings but not its class: found from the data set
    hp = torch.load(toy_adv_ckpt, weights_only=False)["datamodule_hyper_parameters"]
    assert hp["train_size"] == 1024 and hp["batch_size"] == 128 and "_class_path" not in hp
    out_dir = tmp_path / "eval"
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "--ckpt", toy_adv_ckpt, "--out-dir", str(out_dir), "--likelihood",
                                      "--likelihood-n=20", *SEARCH])
    runpy.run_path("experiments/evaluate.py", run_name="__main__")  # the search runs first: no samples yet
    printed = capsys.readouterr().out
    assert "mean log q_σmin" in printed and "likelihood.json" in printed
    res = json.loads((out_dir / "likelihood.json").read_text())
    assert list(res) == ["codes", "prior", "none", "langevin"]
    for name, entry in res.items():
        assert set(entry) == ENTRY, name
        assert all(math.isfinite(entry[k]) for k in ("mean_log_prob", "nats_per_dim")), (name, entry)
        assert entry["nats_per_dim"] == pytest.approx(entry["mean_log_prob"] / 2)  # latent_dim 2
        assert entry["n"] == 20 and entry["nfe"] > 0
    # with the samples of the same search in place (its search.ckpt), the search is not run again, and the numbers
    # are reproduced; samples of other settings are not rated as if they were this search's
    stamp = os.path.getmtime(out_dir / "samples-langevin.npz")
    again = evaluate(str(out_dir / "search.ckpt"), str(out_dir), ["--trainer.accelerator=cpu"], likelihood=True,
                     likelihood_n=20)
    assert again["results"] is None and os.path.getmtime(out_dir / "samples-langevin.npz") == stamp
    assert again["likelihood"] == res
    with pytest.raises(TaskError, match="samples of another search .*num_samples.*samplers"):
        evaluate(toy_adv_ckpt, str(out_dir), ["--trainer.accelerator=cpu"], likelihood=True, likelihood_n=20)


def test_likelihood_is_exact_when_d_says_q_equals_p(toy_adv_ckpt):
    """logit D ≡ 0 makes the score the noised prior's, so log q_σmin(z) = log N(z; 0, (1 + σ_min²) I) exactly."""
    model = load_latent_model(toy_adv_ckpt)
    for p in model.discriminator.parameters():
        p.data.zero_()
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(0)) * 2
    ladder = model.ladder
    res = log_prob_summary(model.score_fn(), z, ladder, batch_size=8, device="cpu")
    expected = gaussian_log_prob(z, 1 + ladder.sigma_min**2).mean().item()
    assert res["mean_log_prob"] == pytest.approx(expected, abs=1e-3) and res["n"] == 16


def test_likelihood_needs_a_latent_model(toy_ae_ckpt):
    ae = toy_ae_ckpt
    with pytest.raises(PhaseCheckpointError,
                       match=r"is a reconstruction \(phase 1\) checkpoint, but this needs an adversarial"):
        evaluate(ae, None, [], likelihood=True)


def test_an_old_search_ckpt_gets_its_sampler_settings_moved(tmp_path):
    """search.ckpt files written before samplers carried their settings held eps0 & co. at the module's level."""
    from dsls.tasks.evaluate import search_settings

    old = {"ckpt": "x.ckpt", "samplers": ["none", "langevin"], "eps0": 1e-3, "steps_per_level": 4, "denoise": False,
           "init": "prior", "num_samples": 10}
    torch.save({"dsls_phase": "search", "hyper_parameters": old}, tmp_path / "search.ckpt")
    hp = search_settings(str(tmp_path / "search.ckpt"))
    assert hp["samplers"] == {"none": {}, "langevin": {"eps0": 1e-3, "steps_per_level": 4, "denoise": False,
                                                       "init": "prior"}}
    assert "eps0" not in hp and hp["num_samples"] == 10
