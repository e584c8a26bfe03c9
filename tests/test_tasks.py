"""The tasks of a trained model (dsls.tasks): inverse problems (inpaint, colorize) and interpolation.

1. the pieces: the measurement operators and masks, PSNR, slerp, the probability-flow round trip on an exact mixture;
2. interpolation on the ring of 8 modes with the exact (oracle) D and an identity autoencoder: the DS-LS path stays on
   the modes where the straight line crosses the holes between them;
3. digits end to end (tiny phase 1 + phase 2 through the CLI): latent DPS inpainting beats the encode-decode
   baseline and the unguided search on the missing half; interpolation's files;
4. colorization on the tinted digits; 5. the command's error for a wrong checkpoint.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dsls.guidance import LUMA, Luma, Masking, box_mask, random_pixel_mask
from dsls.metrics.toy import mixture_spec
from dsls.noise import SigmaLadder
from dsls.samplers.ode import flow
from dsls.score import GaussianMixture, LogRatio, OracleDiscriminator, Score, noised_prior
from dsls.tasks import TaskError
from dsls.tasks.interpolate import (hole_figures, linear_path, logit_at_sigma_min, ode_path, run_interpolation,
                                    slerp, top_sigma)
from dsls.tasks.inverse import operator_for, psnr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- 1. the pieces ---------------------------------------------------------------------------------------------------
def test_inpaint_box_operator_masks_exactly_the_bottom_half():
    truth = torch.rand(5, 3, 8, 8) * 2 - 1
    op, y, mask, shown = operator_for("inpaint", truth, list(range(5)))
    assert isinstance(op, Masking) and mask.shape == truth.shape
    assert (mask[:, :, :4] == 1).all() and (mask[:, :, 4:] == 0).all()  # rows 0-3 observed, rows 4-7 missing
    torch.testing.assert_close(y, truth * mask, rtol=0, atol=0)
    assert (shown[:, :, 4:] == 0).all() and torch.equal(shown[:, :, :4], truth[:, :, :4])  # missing shown mid-grey
    torch.testing.assert_close(op(truth), y, rtol=0, atol=0)
    half = torch.tensor([[1.0] * 4] * 3 + [[0.0] * 4] * 3)  # 6 rows: the last 3 missing
    torch.testing.assert_close(box_mask((1, 6, 4), 2)[:, 0], half.expand(2, 6, 4))
    with pytest.raises(TaskError, match="--mask must be one of box, random"):
        operator_for("inpaint", truth, list(range(5)), mask="circle")
    with pytest.raises(TaskError, match="unknown inverse task 'deblur'"):
        operator_for("deblur", truth, list(range(5)))


def test_random_pixel_mask_depends_on_seed_and_index_alone():
    shape, fraction = (3, 8, 8), 0.3
    m = random_pixel_mask(shape, [0, 1, 2, 3, 4, 5], fraction, seed=7)
    assert m.shape == (6, 3, 8, 8) and set(m.unique().tolist()) == {0.0, 1.0}
    missing = (m[:, 0] == 0).flatten(1).sum(1)
    assert (missing == round(fraction * 8 * 8)).all(), missing  # 19 of 64 pixels per image
    assert (m == m[:, :1]).all()  # a pixel is missing in all its channels
    # the same index in another batch, at another position, gets the same mask
    other = random_pixel_mask(shape, [9, 4, 2], fraction, seed=7)
    assert torch.equal(other[1], m[4]) and torch.equal(other[2], m[2])
    assert not torch.equal(m[0], m[1])  # other index, other mask
    assert not torch.equal(random_pixel_mask(shape, [4], fraction, seed=8)[0], m[4])  # other seed, other mask
    # operator_for draws the same masks, and the observation is the truth on the kept pixels, 0 elsewhere
    truth = torch.rand(3, 3, 8, 8) * 2 - 1
    _, y, mask, _ = operator_for("inpaint", truth, [9, 4, 2], mask="random", fraction=fraction, seed=7)
    assert torch.equal(mask, other) and torch.equal(y, truth * other)
    with pytest.raises(ValueError, match=r"missing fraction must be in \(0, 1\)"):
        random_pixel_mask(shape, [0], 1.0, seed=0)


def test_luma_of_a_gray_image_is_that_gray():
    gray = torch.rand(4, 1, 8, 8) * 2 - 1
    torch.testing.assert_close(Luma()(gray.expand(4, 3, 8, 8)), gray, rtol=0, atol=1e-6)
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert LUMA == (0.299, 0.587, 0.114)  # ITU-R BT.601
    torch.testing.assert_close(Luma()(red), torch.full((1, 1, 2, 2), 0.299 - 0.587 - 0.114))
    with pytest.raises(ValueError, match="3 channels"):
        Luma()(gray)
    truth = torch.rand(2, 3, 8, 8) * 2 - 1
    _, y, mask, shown = operator_for("colorize", truth, [0, 1])
    assert y.shape == (2, 1, 8, 8) and (mask == 1).all() and shown.shape == truth.shape
    assert (shown == shown[:, :1]).all() and torch.equal(shown[:, :1], y)  # shown as a gray RGB image
    with pytest.raises(TaskError, match="colour"):
        operator_for("colorize", gray, [0, 1, 2, 3])


def test_psnr():
    truth = torch.rand(6, 1, 8, 8) * 2 - 1
    ones = torch.ones_like(truth)
    assert psnr(truth, truth, ones) > 100  # zero error: clamped at 1e-12, 126 dB
    e = 0.1
    assert psnr(truth + e, truth, ones) == pytest.approx(10 * math.log10(4 / e**2), abs=1e-3)  # 26.02 dB
    # only where `where` is 1 counts: a huge error on the other pixels changes nothing
    where = box_mask((1, 8, 8), 6)
    x = truth + e * where + 5.0 * (1 - where)
    assert psnr(x, truth, where) == pytest.approx(10 * math.log10(4 / e**2), abs=1e-3)
    # the mean over images of each image's PSNR, not the PSNR of the pooled error
    x = truth.clone()
    x[:3] += 0.1
    x[3:] += 0.2
    expected = (10 * math.log10(4 / 0.01) + 10 * math.log10(4 / 0.04)) / 2
    assert psnr(x, truth, ones) == pytest.approx(expected, abs=1e-3)


def test_slerp_endpoints_and_linear_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 5, generator=g), 3 * torch.randn(4, 5, generator=g)
    t = torch.linspace(0, 1, 7)
    s = slerp(a, b, t)
    assert s.shape == (4, 7, 5)
    torch.testing.assert_close(s[:, 0], a, rtol=0, atol=1e-5)
    torch.testing.assert_close(s[:, -1], b, rtol=0, atol=1e-5)
    expected_norm = (1 - t) * a.norm(dim=1, keepdim=True) + t * b.norm(dim=1, keepdim=True)
    torch.testing.assert_close(s.norm(dim=2), expected_norm, rtol=1e-5, atol=1e-5)
    # on the great circle: the angle from a grows linearly to the angle between a and b
    cos = lambda u, v: (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))  # noqa: E731
    omega = torch.arccos(cos(a, b)).view(-1, 1)
    torch.testing.assert_close(torch.arccos(cos(a.unsqueeze(1), s).clamp(-1, 1)), t * omega, rtol=0, atol=1e-3)
    lin = linear_path(a, b, 7)
    torch.testing.assert_close(lin[:, 3], (a + b) / 2)


def ring_mixture(std: float) -> GaussianMixture:
    means, _ = mixture_spec("ring8")  # 8 means on the circle of radius 2
    return GaussianMixture(torch.tensor(means, dtype=torch.float32), torch.full((8,), std**2))


def oracle_score(mixture: GaussianMixture) -> Score:
    return Score([LogRatio(OracleDiscriminator(mixture)), noised_prior])


def test_flow_round_trip_with_the_exact_score_returns_the_points():
    mix = ring_mixture(0.02)  # ring8 itself
    x = mix.sample(256, generator=torch.Generator().manual_seed(0))
    up, nfe_up = flow(oracle_score(mix), x, 0.03, 4.0)
    assert (up - x).norm(dim=1).mean() > 1.0  # it did travel: at σ = 4 the codes are spread over N(0, 17 I)
    back, nfe_down = flow(oracle_score(mix), up, 4.0, 0.03)
    # measured: max |back − x| = 7e-5 at dopri5's rtol = atol = 1e-5; 1e-3 allows solver noise, not a wrong drift
    # (a drift of the wrong sign or scale misses by the ring's size)
    assert (back - x).abs().max() < 1e-3
    assert nfe_up > 10 and nfe_down > 10


# -- 2. interpolation on the ring with the oracle D ------------------------------------------------------------------
class IdentityAutoencoder:
    data_shape = (2,)

    def encode(self, x, sample=False):
        return x


class OracleRingModel:
    """What run_interpolation needs of a phase-2 model: the exact D of ring8 and an identity autoencoder, the latent is
    the data. The held-out points are the ring8 validation split (Toy2DDataModule, found from the data set name)."""

    phase, dataset_name, device, latent_shape = "adversarial", "ring8", torch.device("cpu"), (2,)
    datamodule_hparams = {"name": "ring8", "train_size": 8, "val_size": 1032, "seed": 0}
    autoencoder = IdentityAutoencoder()

    def __init__(self, std: float = 0.02):
        self.mixture = ring_mixture(std)
        self.discriminator = OracleDiscriminator(self.mixture)
        self.ladder = SigmaLadder(4.0, 0.03, 10)  # σ_max = 4: the ring's diameter, as the toy configs' auto σ_max

    def score_fn(self) -> Score:
        return oracle_score(self.mixture)

    def decode(self, z):
        return z


@pytest.fixture(scope="module")
def ring_interpolations(tmp_path_factory):
    model, out = OracleRingModel(), {}
    for sigma_top in ("max", 1.0):
        d = tmp_path_factory.mktemp(f"ring-interp-{sigma_top}")
        out[sigma_top] = (d, run_interpolation(model, str(d), pairs=16, steps=9, reference_codes=1000,
                                               sigma_top=sigma_top))
    return out


@pytest.mark.parametrize("sigma_top", ["max", 1.0])
def test_run_interpolation_on_the_ring_with_the_oracle(ring_interpolations, sigma_top):
    d, entry = ring_interpolations[sigma_top]
    arrays = np.load(d / "interpolate.npz")
    assert set(arrays.files) == {"linear", "linear_z", "dsls", "dsls_z"}
    for k in arrays.files:
        assert arrays[k].shape == (16, 9, 2) and arrays[k].dtype == np.float32, k
    lin, ds = arrays["linear_z"], arrays["dsls_z"]
    # both paths join the same held-out points (DS-LS: an ODE round trip, within the solver's tolerance)
    np.testing.assert_allclose(ds[:, [0, -1]], lin[:, [0, -1]], atol=1e-3)
    np.testing.assert_allclose(lin[:, 4], (lin[:, 0] + lin[:, -1]) / 2, atol=1e-6)
    assert (d / "interpolate.png").stat().st_size > 1000
    saved = json.loads((d / "results.json").read_text())["interpolate"]
    assert saved["sigma_top"] == (4.0 if sigma_top == "max" else 1.0) and saved["pairs"] == 16
    assert saved["dsls"]["on_manifold"] == pytest.approx(entry["dsls"]["on_manifold"]) and saved["dsls"]["nfe"] > 0
    # measured (16 pairs, 2 of them within one mode): linear 0.32 (end points and same-mode pairs only); DS-LS 0.85
    # at σ_max, 0.74 at σ_top = 1. DS-LS points are q_σmin-typical (std √(0.02² + 0.03²)), the threshold comes from
    # the clean data (std 0.02), which caps even a perfect path near 0.6 of its interior points on this narrow ring.
    assert entry["linear"]["on_manifold"] < 0.45
    assert entry["dsls"]["on_manifold"] > entry["linear"]["on_manifold"] + 0.3, entry


def test_ode_path_when_q_is_the_prior_is_a_slerp_at_sigma_max_and_a_line_below():
    """With D ≡ 0 (q = p = N(0, I)) the flow only rescales: z_σ = z·√((1+σ²)/(1+σ_min²)), and scaling commutes with
    both paths, so DS-LS is exactly slerp(z_a, z_b) at σ_top = σ_max and the straight line at σ_top = 1."""
    g = torch.Generator().manual_seed(1)
    za, zb = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    ladder, t = SigmaLadder(5.0, 0.03, 10), torch.linspace(0, 1, 7)
    path, _ = ode_path(Score([noised_prior]), za, zb, 7, ladder, "max")
    torch.testing.assert_close(path, slerp(za, zb, t), rtol=0, atol=1e-3)
    path, _ = ode_path(Score([noised_prior]), za, zb, 7, ladder, 1.0)
    torch.testing.assert_close(path, linear_path(za, zb, 7), rtol=0, atol=1e-3)
    assert (slerp(za, zb, t) - linear_path(za, zb, 7)).abs().max() > 0.1  # the two are told apart


def test_ode_path_stays_on_the_modes_between_different_modes():
    """Pairs on different modes of a broader ring (std 0.05, so that q_σmin ≈ q: the σ_min blur no longer caps the
    figure): the straight line leaves the modes right after its first point, the DS-LS path stays on them."""
    torch.manual_seed(0)
    model = OracleRingModel(std=0.05)
    g = torch.Generator().manual_seed(0)
    threshold = float(torch.quantile(logit_at_sigma_min(model, model.mixture.sample(2000, generator=g)), 0.05))
    pts = model.mixture.sample(160, generator=g)
    mode = torch.cdist(pts, model.mixture.means).argmin(1)
    apart = mode[0::2] != mode[1::2]
    za, zb = pts[0::2][apart][:64], pts[1::2][apart][:64]
    assert len(za) == 64
    lin = linear_path(za, zb, 9)
    linear = hole_figures(model, lin, lin, threshold)["on_manifold"]
    found = {}
    for sigma_top in ("max", 1.0):
        path, nfe = ode_path(model.score_fn(), za, zb, 9, model.ladder, sigma_top)
        assert path.shape == (64, 9, 2) and nfe > 20
        torch.testing.assert_close(path[:, 0], za, rtol=0, atol=1e-3)
        torch.testing.assert_close(path[:, -1], zb, rtol=0, atol=1e-3)
        found[sigma_top] = hole_figures(model, path, path, threshold)["on_manifold"]
    assert top_sigma(model.ladder, "max") == 4.0 and top_sigma(model.ladder, 100.0) == 4.0
    # measured: linear 0.21 (its 2 end points of 9, nothing between); DS-LS 0.93 at σ_max and 0.91 at σ_top = 1
    # (0.89-0.91 over four other draws of the pairs: 0.9 does not hold with a margin, hence 0.85)
    assert linear < 0.25, linear
    assert found[1.0] >= 0.85, found
    assert found["max"] >= 0.85, found


# -- 3. digits end to end --------------------------------------------------------------------------------------------
STEPS = 300  # per phase: measured ~4 s (phase 1) + ~6 s (phase 2) on 2 cores, and enough for the margins below


def fit_phases(run, dataset: str, steps: int = STEPS) -> dict:
    from dsls.cli import main

    common = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
              "--trainer.accelerator=cpu", "--trainer.num_sanity_val_steps=0", f"--trainer.max_steps={steps}",
              f"--run_dir={run}"]
    main(["fit", "--config", f"configs/{dataset}/reconstruction.yaml", *common])
    ae = run / "reconstruction" / "checkpoints" / "last.ckpt"
    main(["fit", "--config", f"configs/{dataset}/adversarial.yaml", f"--model.autoencoder_ckpt={ae}", *common])
    return {"run": run, "ae": str(ae), "adv": str(run / "adversarial" / "checkpoints" / "last.ckpt")}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return fit_phases(tmp_path_factory.mktemp("digits") / "run", "digits")


@pytest.fixture(scope="module")
def digits_inpaint(digits, tmp_path_factory):
    from dsls.tasks.evaluate import run_task

    d = tmp_path_factory.mktemp("inpaint")
    guided = run_task("inpaint", digits["adv"], str(d / "guided"), [], num=60)
    unguided = run_task("inpaint", digits["adv"], str(d / "unguided"), ["--model.fidelity=[]"], num=60, scale=0.0)
    return {"guided": guided, "unguided": unguided, "dir": d}


def masked_mse(arrays, name: str) -> float:
    missing = arrays["mask"] == 0
    return float(((arrays[name] - arrays["truth"]) ** 2)[missing].mean())


@pytest.mark.slow
def test_inpaint_digits_files_and_quality(digits_inpaint):
    out = digits_inpaint["guided"]
    d = digits_inpaint["dir"] / "guided"
    assert out["task"] == "inpaint" and out["out_dir"] == str(d)
    arrays = dict(np.load(d / "inverse-inpaint.npz"))
    assert set(arrays) == {"truth", "observed", "mask", "dsls", "baseline"}
    for k, v in arrays.items():
        assert v.shape == (60, 1, 8, 8) and v.dtype == np.float32, k
        assert v.min() >= -1 and v.max() <= 1, k
    mask = arrays["mask"]
    assert (mask[:, :, :4] == 1).all() and (mask[:, :, 4:] == 0).all()
    np.testing.assert_array_equal(arrays["observed"], arrays["truth"] * mask)
    assert (d / "inverse-inpaint.png").stat().st_size > 1000
    res = json.loads((d / "results.json").read_text())["inpaint"]
    assert res["guidance_scale"] == 10.0 and res["mask"] == "box" and res["num_samples"] == 60
    for name in ("dsls", "baseline"):
        assert math.isfinite(res[name]["psnr_missing"]) and res[name]["residual"] >= 0, res[name]
        assert math.isfinite(res[name]["classifier_fid"])  # digits: the image metric rides along
    # the reported PSNR is the one of the arrays (mean over images, on the missing half)
    assert res["dsls"]["psnr_missing"] == pytest.approx(
        psnr(torch.from_numpy(arrays["dsls"]), torch.from_numpy(arrays["truth"]), torch.from_numpy(1 - mask)), abs=1e-4)
    # measured (300 + 300 steps): missing-half MSE 0.27 DS-LS, 0.54 unguided search (w = 0), 0.87 baseline;
    # PSNR 12.7 vs 9.1 vs 6.7 dB; residual on the known half 0.18 DS-LS vs 0.58 baseline
    unguided = dict(np.load(digits_inpaint["dir"] / "unguided" / "inverse-inpaint.npz"))
    mse = {"dsls": masked_mse(arrays, "dsls"), "baseline": masked_mse(arrays, "baseline"),
           "unguided": masked_mse(unguided, "dsls")}
    assert mse["dsls"] < mse["baseline"], mse
    assert mse["dsls"] < mse["unguided"], mse
    assert res["dsls"]["psnr_missing"] > res["baseline"]["psnr_missing"]
    assert res["dsls"]["residual"] < res["baseline"]["residual"]
    # each completion fits its own observation: less than half the unguided search's residual on the known half
    # (measured 0.18 vs 0.50). A search fed the wrong rows' observations still beats the baseline and the unguided
    # search on the missing half (measured: residual 0.45, PSNR 9.8 dB); this catches it.
    assert res["dsls"]["residual"] < 0.5 * digits_inpaint["unguided"]["entry"]["dsls"]["residual"], res
    # w = 0 is the plain search: its observations and truth are the same held-out images
    np.testing.assert_array_equal(unguided["truth"], arrays["truth"])
    assert digits_inpaint["unguided"]["entry"]["guidance_scale"] == 0.0


@pytest.mark.slow
def test_interpolate_digits_files(digits, tmp_path):
    from dsls.tasks.evaluate import run_task

    out = run_task("interpolate", digits["adv"], str(tmp_path), [], num=4, steps=5)
    arrays = np.load(tmp_path / "interpolate.npz")
    for name in ("linear", "dsls"):
        assert arrays[name].shape == (4, 5, 1, 8, 8) and arrays[name].dtype == np.float32, name
        assert arrays[f"{name}_z"].shape == (4, 5, 8)
    # the DS-LS path's ends are the held-out codes again, after an ODE round trip through the learned D (measured
    # 3e-3 off, codes of size up to 4)
    np.testing.assert_allclose(arrays["dsls_z"][:, [0, -1]], arrays["linear_z"][:, [0, -1]], atol=2e-2)
    assert (tmp_path / "interpolate.png").is_file()
    res = json.loads((tmp_path / "results.json").read_text())["interpolate"]
    assert res["pairs"] == 4 and res["steps"] == 5 and res["sigma_top"] == 1.0
    for name in ("linear", "dsls"):
        assert 0 <= res[name]["on_manifold"] <= 1 and res[name]["path_energy"] >= 0, res[name]
        assert res[name]["on_manifold"] == out["entry"][name]["on_manifold"]
    assert res["dsls"]["nfe"] > 0 and res["linear"]["nfe"] == 0


@pytest.mark.slow
def test_colorize_needs_colour_images(digits, tmp_path):
    from dsls.tasks.evaluate import run_task

    with pytest.raises(TaskError, match="colour"):
        run_task("colorize", digits["adv"], str(tmp_path / "c"), [], num=4)
    assert not (tmp_path / "c" / "inverse-colorize.npz").exists()


# -- 4. colorization on the tinted digits ----------------------------------------------------------------------------
@pytest.mark.slow
def test_colorize_tinted_digits(tmp_path_factory):
    from dsls.tasks.evaluate import run_task

    tinted = fit_phases(tmp_path_factory.mktemp("tinted") / "run", "tinted_digits")
    d = tmp_path_factory.mktemp("colorize")
    run_task("colorize", tinted["adv"], str(d), [], num=60)
    arrays = dict(np.load(d / "inverse-colorize.npz"))
    for k, v in arrays.items():
        assert v.shape == (60, 3, 8, 8) and v.dtype == np.float32 and v.min() >= -1 and v.max() <= 1, k
    obs = arrays["observed"]
    np.testing.assert_array_equal(obs[:, 0], obs[:, 1])
    np.testing.assert_array_equal(obs[:, 0], obs[:, 2])  # a gray image: the luma in all three channels
    luma = Luma()(torch.from_numpy(arrays["truth"])).numpy()
    np.testing.assert_allclose(obs[:, :1], luma, atol=1e-6)
    assert (arrays["truth"][:, 0] != arrays["truth"][:, 1]).any()  # the truth is not gray: there is colour to find
    assert (d / "inverse-colorize.png").is_file()
    res = json.loads((d / "results.json").read_text())["colorize"]
    # measured (300 + 300 steps): PSNR 16.1 dB DS-LS vs 11.5 dB baseline, residual 0.18 vs 0.28
    assert res["dsls"]["psnr_missing"] > res["baseline"]["psnr_missing"], res
    assert "mask" not in res and res["guidance_scale"] == 10.0


# -- 5. the command -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_evaluate_command_rejects_a_phase_1_checkpoint(digits, tmp_path):
    from dsls.phases.base import PhaseCheckpointError
    from dsls.tasks.evaluate import run_task

    with pytest.raises(PhaseCheckpointError, match="is a reconstruction checkpoint"):
        run_task("inpaint", digits["ae"], str(tmp_path), [], num=4)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    p = subprocess.run([sys.executable, "experiments/evaluate.py", "--ckpt", digits["ae"], "--task", "inpaint",
                        "--out", str(tmp_path / "cli")], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "reconstruction checkpoint" in last, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "cli").exists()


@pytest.mark.slow
@pytest.mark.parametrize("task, kw", [("inpaint", {"mask": "random", "fraction": 0.4}), ("inpaint", {})])
def test_inverse_results_do_not_depend_on_the_batch(digits, task, kw):
    """Per-sample seeds and per-row observations: an image's result is the same in any batch (padded rows included)."""
    from dsls.tasks.heldout import heldout_data, load_latent_model
    from dsls.tasks.inverse import solve

    model = load_latent_model(digits["adv"])
    truth = heldout_data(model, 13)
    quiet = dict(sampler_name="langevin", settings={"steps_per_level": 2}, log=lambda *a: None, **kw)
    a = solve(model, truth, task, batch_size=13, **quiet)["arrays"]
    b = solve(model, truth, task, batch_size=5, **quiet)["arrays"]
    for k in ("mask", "observed", "dsls", "baseline"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    from dsls.tasks import TaskError
    from dsls.tasks.inverse import check_new_output

    (tmp_path / "inverse-inpaint.npz").write_bytes(b"")
    with pytest.raises(TaskError, match="exists: pass another --out"):
        check_new_output(str(tmp_path), "inverse-inpaint.npz")
    check_new_output(str(tmp_path), "inverse-colorize.npz")  # another task's file is free
