"""Anomaly detection (dsls.anomaly, --task anomaly): the one-class-out protocol end to end on a tiny digits run trained
without one digit, the contract of its files, a fit that never sees an anomaly, and LatentModel.anomaly_score."""
import json

import numpy as np
import pytest

HELD_OUT = 9
STEPS = 150  # per phase: a few seconds; enough for the held-out digit to score above chance


@pytest.fixture(scope="session")
def heldout_run(tmp_path_factory) -> dict:
    """Phases 1 and 2 of configs/digits without digit HELD_OUT, with a 20 % test split, through the CLI."""
    from dsls.cli import main

    run = tmp_path_factory.mktemp("anomaly") / "run"
    common = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
              "--trainer.accelerator=cpu", "--trainer.num_sanity_val_steps=0", f"--trainer.max_steps={STEPS}",
              "--trainer.callbacks=[]", f"--data.exclude_classes=[{HELD_OUT}]", "--data.test_fraction=0.2",
              f"--run_dir={run}"]
    main(["fit", "--config", "configs/digits/reconstruction.yaml", *common])
    ae = run / "reconstruction" / "checkpoints" / "last.ckpt"
    main(["fit", "--config", "configs/digits/adversarial.yaml", f"--model.autoencoder_ckpt={ae}", *common])
    return {"run": run, "adv": str(run / "adversarial" / "checkpoints" / "last.ckpt")}


@pytest.fixture(scope="session")
def scored(heldout_run, tmp_path_factory) -> dict:
    """--task anomaly on the held-out run, as experiments/evaluate.py runs it."""
    from dsls.tasks.registry import run_task

    out = tmp_path_factory.mktemp("anomaly-out") / "scored"
    result = run_task("anomaly", heldout_run["adv"], str(out))
    return {"out": out, "result": result}


def _datamodule(ckpt: str):
    from dsls.tasks.anomaly import build_datamodule
    from dsls.tasks.heldout import datamodule_hparams, load_latent_model

    model = load_latent_model(ckpt)
    return model, build_datamodule(datamodule_hparams(model))


def test_the_held_out_digit_is_in_no_training_batch_and_in_the_test_labels(heldout_run, scored):
    from dsls.checkpoints import load_phase_checkpoint

    for phase in ("reconstruction", "adversarial"):  # what each phase trained with, as its checkpoint recorded it
        ck = load_phase_checkpoint(str(heldout_run["run"] / phase / "checkpoints" / "last.ckpt"), phase)
        assert ck["datamodule_hyper_parameters"]["exclude_classes"] == [HELD_OUT]
    _, dm = _datamodule(heldout_run["adv"])
    seen = np.concatenate([y.numpy() for _, y in dm.train_dataloader()])
    assert len(seen) > 500 and HELD_OUT not in seen and set(seen) == set(range(10)) - {HELD_OUT}
    with np.load(scored["out"] / "anomaly.npz") as f:
        labels, classes = f["labels"], f["classes"]
    assert set(classes[labels == 1]) == {HELD_OUT} and HELD_OUT not in classes[labels == 0]
    # every held-out image of the test split and of the train split, and every normal test image
    n_test = int((dm.test_set.tensors[1] == HELD_OUT).sum())
    assert labels.sum() == n_test + len(dm.excluded_train_set) and n_test > 0
    assert (labels == 0).sum() == len(dm.test_set) - n_test


def test_the_files_follow_the_contract_and_the_aucs_are_sklearns(scored, heldout_run):
    from sklearn.metrics import average_precision_score, roc_auc_score

    out = scored["out"]
    entry = json.loads((out / "results.json").read_text())["anomaly"]
    assert entry == scored["result"]["entry"]
    with np.load(out / "anomaly.npz") as f:
        arrays = {k: f[k] for k in f.files}
    labels = arrays["labels"]
    assert labels.dtype.kind == "i" and set(np.unique(labels)) == {0, 1}
    names = [k.removeprefix("score_") for k in arrays if k.startswith("score_")]
    assert set(names) == set(entry["scores"])
    assert {"recon", "recon_complexity", "consistency", "typicality", "combined"} <= set(names)
    assert sum(n.startswith("logit_sigma0.03") for n in names) == 1 and "nll" not in names  # nll: not by default
    for name in names:
        s = arrays[f"score_{name}"]
        assert s.dtype == np.float64 and s.shape == labels.shape and np.isfinite(s).all()
        r = entry["scores"][name]
        assert r["auroc"] == roc_auc_score(labels, s) and r["auprc"] == average_precision_score(labels, s)
        assert r["base_rate"] == labels.mean() and r["seconds_per_1000"] > 0
    assert entry["default_score"] == "recon_complexity" and entry["base_rate"] == labels.mean()
    assert entry["anomaly_classes"] == [HELD_OUT] and entry["protocol"] == "classes"
    # 150 steps: the reconstruction error already ranks the unseen digit above the normal ones
    assert min(entry["scores"][k]["auroc"] for k in ("recon", "recon_complexity", "combined")) > 0.6
    fit = json.loads((out / "anomaly.json").read_text())
    assert fit["combined"]["parts"] == ["recon", "typicality"] and fit["n_normal"] == entry["n_normal_fit"]
    assert (out / "anomaly.png").stat().st_size > 10_000
    report = scored["result"]["report"]
    assert "recon_complexity (default)" in report and f"base rate {labels.mean():.3f}" in report


def _score_with(heldout_run, out, change, monkeypatch) -> tuple[str, dict]:
    """The task into `out` with its test set changed by change(data) first; (anomaly.json's text, the npz)."""
    import dsls.tasks.anomaly as task
    from dsls.tasks.registry import run_task

    original = task.protocol_test_set
    monkeypatch.setattr(task, "protocol_test_set", lambda *a, **k: change(original(*a, **k)))
    run_task("anomaly", heldout_run["adv"], str(out))
    monkeypatch.setattr(task, "protocol_test_set", original)
    with np.load(out / "anomaly.npz") as f:
        return (out / "anomaly.json").read_text(), {k: f[k] for k in f.files}


def test_the_fit_never_sees_an_anomaly(heldout_run, scored, tmp_path, monkeypatch):
    """Deleting the anomalies from the test set (all but one: the metrics need both kinds) or replacing them with
    random images (so their scores become other numbers) leaves the fitted parameters bit for bit as they were."""
    import torch

    fitted = (scored["out"] / "anomaly.json").read_text()
    with np.load(scored["out"] / "anomaly.npz") as f:
        before = {k: f[k] for k in f.files}

    def deleted(data):
        keep = np.flatnonzero(data["labels"] == 0).tolist() + [int(np.flatnonzero(data["labels"] == 1)[0])]
        return {**data, "x": data["x"][keep], "labels": data["labels"][keep], "classes": data["classes"][keep]}

    def randomised(data):
        x = data["x"].clone()
        pos = torch.from_numpy(data["labels"] == 1)
        x[pos] = torch.rand(x[pos].shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
        return {**data, "x": x}

    fit_deleted, after_deleted = _score_with(heldout_run, tmp_path / "deleted", deleted, monkeypatch)
    fit_random, after_random = _score_with(heldout_run, tmp_path / "random", randomised, monkeypatch)
    assert fit_deleted == fitted and fit_random == fitted
    assert after_deleted["labels"].sum() == 1 and len(after_deleted["labels"]) < len(before["labels"])
    moved = before["labels"] == 1
    for name in ("score_recon", "score_typicality", "score_combined"):  # the anomalies' scores did change
        assert not np.allclose(after_random[name][moved], before[name][moved])
        np.testing.assert_array_equal(after_random[name][~moved], before[name][~moved])  # the normal ones did not


def test_an_unknown_default_score_stops_before_scoring(heldout_run, tmp_path):
    from dsls.errors import ConfigError
    from dsls.tasks.registry import run_task

    with pytest.raises(ConfigError, match="--default-score nll is not among the scores computed"):
        run_task("anomaly", heldout_run["adv"], str(tmp_path / "a"), default_score="nll")
    assert not (tmp_path / "a" / "anomaly.npz").exists()


def test_ood_protocol_labels_the_other_data_set(heldout_run, tmp_path):
    """--ood-data: the run's normal test images against another data set's test images (here the digits with another
    split, as a stand-in); a data set of another image shape is one TaskError naming the shapes."""
    import yaml

    from dsls.errors import TaskError
    from dsls.tasks.registry import run_task

    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"data": {"class_path": "dsls.data.digits.DigitsDataModule",
                                              "init_args": {"test_fraction": 0.1, "split_seed": 3}}}))
    entry = run_task("anomaly", heldout_run["adv"], str(tmp_path / "ood"), ood_data=str(other), num=300)["entry"]
    assert entry["protocol"] == "ood" and entry["n"] == 300 and 0 < entry["n_anomalies"] < 300
    with np.load(tmp_path / "ood" / "anomaly.npz") as f:
        assert (f["classes"][f["labels"] == 1] == -1).all() and HELD_OUT not in f["classes"][f["labels"] == 0]
    with pytest.raises(TaskError, match=r"shaped \[3, 8, 8\], the model's data \[1, 8, 8\]"):
        run_task("anomaly", heldout_run["adv"], str(tmp_path / "tinted"), ood_data="configs/tinted_digits/"
                 "reconstruction.yaml")


# -- LatentModel.anomaly_score on the toy model ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_model_and_points(toy_adv_ckpt):
    import dsls
    from dsls.data.toy2d import sample_toy2d

    model = dsls.load(toy_adv_ckpt)
    points = sample_toy2d("grid25", 300, np.random.default_rng(0)).astype(np.float32)
    return model, points[:240], points[240:]


def test_anomaly_score_gives_finite_scores_of_every_kind(toy_model_and_points):
    from dsls.anomaly import KINDS
    from dsls.errors import TaskError

    model, normal, x = toy_model_and_points
    fit = model.fit_anomaly(normal)
    assert model.anomaly_fit is fit and fit.n_normal == 240
    for kind in KINDS:
        if kind == "recon_complexity":  # it compresses images: toy points have none
            with pytest.raises(TaskError, match="not images"):
                model.anomaly_score(x, kind)
            continue
        s = model.anomaly_score(x, kind)
        assert s.shape == (60,) and s.dtype.is_floating_point and bool(s.isfinite().all()), kind
    far = np.full((4, 2), 40.0, dtype=np.float32)  # far from every mode: more anomalous than the data
    assert model.anomaly_score(far, "recon").min() > model.anomaly_score(x, "recon").median()
    a, b = model.anomaly_score(x, "logit", sigma=0.5), model.anomaly_score(x, "logit")
    assert not np.allclose(a.numpy(), b.numpy())  # another σ, another score
    assert model.fit_anomaly(normal).to_dict() == fit.to_dict()  # deterministic


def test_a_bad_kind_names_the_valid_ones_and_the_fitted_scores_need_a_fit(toy_adv_ckpt, toy_model_and_points):
    import dsls
    from dsls.errors import ConfigError

    model, _, x = toy_model_and_points
    with pytest.raises(ConfigError, match="valid: recon, recon_complexity, nll, logit, consistency, typicality, "
                                          "combined"):
        model.anomaly_score(x, "reconstruction")
    fresh = dsls.load(toy_adv_ckpt)
    with pytest.raises(ConfigError, match=r"fit_anomaly\(normal_x\)"):
        fresh.anomaly_score(x, "combined")
    with pytest.raises(ConfigError, match="takes a batch of the model's data"):
        fresh.anomaly_score(np.zeros((3, 5), dtype=np.float32), "recon")


def test_a_prior_without_a_logit_skips_the_logit_scores(toy_model_and_points, monkeypatch, capsys):
    from dsls.anomaly import compute_scores, fit_anomaly
    from dsls.errors import TaskError
    from dsls.priors import LatentPrior

    model, normal, x = toy_model_and_points
    monkeypatch.setattr(type(model.prior), "logit", LatentPrior.logit)  # as a score network's prior: a TaskError
    fit = fit_anomaly(model, normal)
    assert fit.typicality is None and fit.combined["parts"] == ["recon"]
    scores, seconds = compute_scores(model, x, fit=fit, skip_unavailable=True)
    assert set(scores) == set(seconds) == {"recon", "consistency", "combined"}
    assert "no logit" in capsys.readouterr().out
    with pytest.raises(TaskError, match="no logit"):
        compute_scores(model, x, ["typicality"], fit)


def test_input_complexity_is_the_png_size_and_ranks_noise_above_a_blank_image(heldout_run):
    """recon_complexity = recon / L(x): L grows with what an image holds, and the score is recon's divided by it."""
    import torch

    from dsls.anomaly import input_complexity, recon_error
    from dsls.data.digits import load_digits_tensors

    x, _ = load_digits_tensors()
    blank, noise = -torch.ones(1, 1, 8, 8), torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    sizes = input_complexity(torch.cat([blank, x[:1], noise]))
    assert sizes[0] < sizes[1] < sizes[2]
    model, _ = _datamodule(heldout_run["adv"])
    np.testing.assert_allclose(model.anomaly_score(x[:20], "recon_complexity").numpy(),
                               (recon_error(model, x[:20]).double() / input_complexity(x[:20])).numpy())


def test_the_default_score_falls_back_to_one_that_is_computed_and_nan_ranks_first():
    import numpy as np

    from dsls.errors import ConfigError
    from dsls.tasks.anomaly import DEFAULT_SCORE, headline_score, metrics

    assert headline_score(None, [DEFAULT_SCORE, "recon"], {}) == DEFAULT_SCORE
    assert headline_score(None, ["recon", "consistency"], {}) == "recon"  # --scores without the default
    assert headline_score(None, ["consistency"], {}) == "consistency"
    with pytest.raises(ConfigError, match="pass one of consistency"):
        headline_score("recon", ["consistency"], {})
    got = metrics(np.array([1, 0, 0]), {"a": np.array([np.nan, 1.0, 0.0])}, {"a": 0.1})
    assert got["a"]["auroc"] == 1.0  # NaN counts as the most anomalous, not as an error
