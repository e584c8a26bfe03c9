"""The pictures a researcher looks at: per-sampler grids at native pixel size, the labelled overview, the toy's
σ-coloured trajectories on axes that hold them whole, D's logit field, and the end-of-training figures of phase 1
(reconstruction pairs) and phase 2 (accuracy of D per σ), and the tasks' labelled grids (inverse problems,
interpolation). Each title and label is read as a new user would: it says what the panel shows."""
import json

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import Logger
from PIL import Image

from dsls.callbacks.grids import SampleFigures, sigma_accuracy
from dsls.data import DigitsDataModule, Toy2DDataModule
from dsls.figures.grids import labelled_layout
from dsls.figures.points import plot_limits
from dsls.figures.search import class_grid_title, logit_field, panel_title, save_search_figure, snapshot_sigmas
from dsls.figures.tasks import save_interpolation_figure, save_inverse_figure
from dsls.noise import SigmaLadder
from dsls.phases.adversarial import AdversarialModule
from dsls.phases.reconstruction import ReconstructionModule
from dsls.phases.search import LatentSearchModule
from dsls.samplers import make_sampler, sample_indices

from conftest import make_tiny_trainer  # the tiny_trainer fixture's factory, for the search helper


class ImageLogger(Logger):
    """A logger that keeps what it is given: the callbacks log images where a logger has log_image."""

    def __init__(self):
        super().__init__()
        self.images = {}

    name, version = "fake", 0

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_image(self, key, images, step=None, **kwargs):
        self.images[key] = list(images)


def image_ckpt(path, shape) -> str:
    """An untrained phase-2 checkpoint on images of `shape`, with no data set (so no metrics): for the figures'
    plumbing, not the samples' quality."""
    ae = dict(data_shape=list(shape), latent_dim=4, arch="mlp", hidden=8, depth=1, tanh_output=True)
    m = AdversarialModule(autoencoder=ae, sigma_max=2.0, d_hidden=8, d_depth=1)
    torch.save({"dsls_phase": "adversarial", "dsls_dataset": None, "hyper_parameters": dict(m.hparams),
                "state_dict": m.state_dict()}, path)
    return str(path)


def search(ckpt, out_dir, **kw) -> LatentSearchModule:
    model = LatentSearchModule(ckpt=ckpt, out_dir=str(out_dir), fidelity=[], **kw)
    make_tiny_trainer(inference_mode=False).predict(model, return_predictions=False)
    return model


def as_png_pixels(x: np.ndarray, k: int) -> np.ndarray:
    """What save_image writes for one (C, H, W) image in [-1, 1], enlarged k× (nearest), as (H·k, W·k, 3) uint8."""
    v = np.floor((np.clip(x, -1, 1) + 1) / 2 * 255 + 0.5).astype(np.uint8)
    v = np.kron(v, np.ones((1, k, k), dtype=np.uint8))
    return np.repeat(v, 3, 0).transpose(1, 2, 0) if v.shape[0] == 1 else v.transpose(1, 2, 0)


@pytest.mark.parametrize("shape, n, k, cols, rows", [
    ((1, 8, 8), 23, 4, 5, 5),  # 8×8 digits enlarged ×4; 23 samples: ⌈√23⌉ = 5 columns, 5 rows
    ((1, 28, 28), 23, 1, 5, 5),  # MNIST at native size
    ((3, 32, 32), 120, 1, 10, 10),  # at most 100 images, 10 columns
])
def test_per_sampler_grid_is_at_native_pixel_size(tmp_path, shape, n, k, cols, rows):
    search(image_ckpt(tmp_path / "adv.ckpt", shape), tmp_path, num_samples=n, num_levels=2,
           samplers={"none": {}, "langevin": {"steps_per_level": 1}})
    side = shape[-1] * k
    for name in ("none", "langevin"):
        img = np.asarray(Image.open(tmp_path / f"samples-{name}.png").convert("RGB"))
        assert img.shape[:2] == (rows * (side + 2) + 2, cols * (side + 2) + 2), name
        x = np.load(tmp_path / f"samples-{name}.npz")["x"]
        for i in (0, cols + 1):  # one PNG pixel per data pixel, images in sample order, 2 px of padding
            r, c = divmod(i, cols)
            cell = img[2 + r * (side + 2): 2 + r * (side + 2) + side, 2 + c * (side + 2): 2 + c * (side + 2) + side]
            np.testing.assert_array_equal(cell, as_png_pixels(x[i], k), err_msg=f"{name} image {i}")
    assert Image.open(tmp_path / "samples.png").size[0] > 2 * cols * (side + 2)  # both samplers, side by side


def test_panel_title_names_sampler_settings_ladder_and_metrics():
    ladder = {"sigma_max": 6.2, "sigma_min": 0.03, "num_levels": 10}
    lang = {"settings": {"eps0": 5e-4, "steps_per_level": 10, "denoise": True, "init": "wide"}, "ladder": ladder,
            "nfe": 101, "modes": 25, "hq_fraction": 0.93, "rev_kl": 0.0123, "seed": 0, "seconds_per_sample": 0.1}
    assert panel_title("langevin", lang).split("\n") == [
        "langevin", "ε₀=0.0005, T=10", "L=10, σ 0.03–6.2, NFE 101", "modes 25, hq 0.93, rev_kl 0.0123"]
    pc = {"settings": {"snr": 0.16, "corrector_steps": 1, "levels": 4, "denoise": False, "init": "prior"},
          "ladder": ladder, "nfe": 7, "classifier_fid": 12.34}
    assert panel_title("pc", pc).split("\n") == [
        "pc", "snr=0.16, corrector steps=1, L=4, init=prior, no denoise", "σ 0.03–6.2, NFE 7", "classifier_fid 12.3"]
    assert panel_title("none", {"settings": {}, "ladder": ladder, "nfe": 0}).split("\n") == [
        "none", "prior draw, no search, NFE 0"]


def test_panel_titles_say_what_each_sampler_really_used_and_how_it_was_guided():
    """A fixed-step ODE shows its method and its own grid (heun2 ignores rtol/atol; its 18 steps are not the ladder's
    L = 10); an adaptive one its tolerances; a guided search its w and labels; 'none' of it that it ignored them."""
    ladder = {"sigma_max": 7.6, "sigma_min": 0.03, "num_levels": 10}
    guided = {"guidance_scale": 3.0, "labels": "balanced", "class_accuracy": 0.41}
    heun = {"settings": {"rtol": 1e-5, "atol": 1e-5, "method": "heun2", "steps": 18, "denoise": True, "init": "wide"},
            "ladder": ladder, "nfe": 35, **guided}
    assert panel_title("ode", heun).split("\n") == [
        "ode", "heun2, 18 steps", "guided: w = 3, balanced labels", "σ 0.03–7.6, NFE 35", "class acc 0.41"]
    dopri = {**heun, "settings": {**heun["settings"], "method": "dopri5", "steps": None}, "guidance_scale": 5.0,
             "labels": 7}
    assert panel_title("ode", dopri).split("\n")[1:3] == ["dopri5, rtol=1e-05, atol=1e-05", "guided: w = 5, class 7"]
    pc = {"settings": {"snr": 0.5, "corrector_steps": 1, "levels": 18}, "ladder": ladder, "nfe": 35}
    assert "L=10" not in panel_title("pc", pc) and "L=18" in panel_title("pc", pc)  # pc's own levels, once
    none = {"settings": {}, "ladder": ladder, "nfe": 0, "guided": False, "class_accuracy": 0.04}
    assert panel_title("none", none).split("\n")[:2] == ["none", "not guided (labels ignored)"]
    assert class_grid_title("none", none).startswith("none: not guided (labels ignored)\n")
    assert class_grid_title("langevin", {**guided}).startswith("langevin: guided: w = 3, balanced labels\n")


@pytest.mark.parametrize("name, settings", [("langevin", {"steps_per_level": 1}), ("pc", {"levels": 4}),
                                            ("ode", {"method": "heun2", "steps": 5}),
                                            ("langevin", {"steps_per_level": 1, "denoise": False})])
def test_snapshot_sigmas_follow_each_sampler(toy_adv_ckpt, name, settings):
    """One σ per trajectory snapshot, from σ_max down to σ_min: Langevin's start and its L levels, pc's and ode's σ
    grid, and the denoise step at σ_min."""
    model = LatentSearchModule(ckpt=toy_adv_ckpt, num_levels=3).model
    ladder, sampler = model.ladder.with_overrides(num_levels=3), make_sampler(name, settings)
    out, _ = sample_indices(model, sampler, model.score_fn(), ladder, 0, range(8), track=4)
    got = snapshot_sigmas(name, len(out.trajectory), {"settings": sampler.settings(), "ladder": ladder.state_dict()})
    grid = {"langevin": [ladder.sigma_max, *ladder.sigmas.tolist()],
            "pc": SigmaLadder(ladder.sigma_max, ladder.sigma_min, 4).sigmas.tolist(),
            "ode": SigmaLadder(ladder.sigma_max, ladder.sigma_min, 5).sigmas.tolist()}[name]
    np.testing.assert_allclose(got, grid + [ladder.sigma_min] * sampler.denoise, rtol=1e-6)


def test_toy_overview_holds_whole_trajectories_and_the_logit_field(toy_adv_ckpt, tmp_path, monkeypatch):
    import dsls.figures.points as points

    figures = []
    monkeypatch.setattr(points.plt, "close", figures.append)  # keep the figures to look into them
    search(toy_adv_ckpt, tmp_path, num_samples=200, num_levels=4, track=6,
           samplers={"none": {}, "langevin": {"steps_per_level": 2}})
    assert {"samples.png", "samples-none.png", "samples-langevin.png"} <= {p.name for p in tmp_path.iterdir()}
    overview = figures[-1]  # drawn after the per-sampler scatters
    axes = {ax.get_title().split("\n")[0]: ax for ax in overview.axes if ax.get_title()}
    assert {"data (grid25)", "none", "langevin", "D's logit field in latent space"} <= set(axes)
    lang = axes["langevin"]
    lines = [c for c in lang.collections if type(c).__name__ == "LineCollection"]
    assert len(lines) == 1 and len(lines[0].get_segments()) == 6 * (4 + 1)  # 6 paths of 4 levels + denoise
    points = np.concatenate(lines[0].get_segments()).reshape(-1, 2)
    (x0, x1), (y0, y1) = lang.get_xlim(), lang.get_ylim()
    assert (points[:, 0] >= x0).all() and (points[:, 0] <= x1).all()
    assert (points[:, 1] >= y0).all() and (points[:, 1] <= y1).all()
    sigma = lines[0].get_array()
    assert sigma.max() <= lines[0].norm.vmax and sigma.min() >= lines[0].norm.vmin  # coloured by σ
    labels = [a.get_ylabel() for ax in overview.axes for a in (ax, *ax.child_axes)]  # colorbars: σ, logit D
    assert any(lab.startswith("σ") for lab in labels) and any(lab.startswith("logit D(z, σ=") for lab in labels)


def test_plot_limits_hold_a_far_trajectory():
    points = [np.random.default_rng(0).normal(size=(1000, 2))]
    traj = np.array([[[40.0, -30.0], [1.0, 1.0], [0.0, 0.0]]])
    lo, hi = plot_limits(points, traj)
    assert lo[0] < 0 < 40 < hi[0] and lo[1] < -30
    lo2, hi2 = plot_limits(points)
    assert hi2[0] < 10 and lo2[1] > -10  # without it, the samples' percentiles


def test_logit_field_is_D_on_its_grid_and_only_for_2d_latents(toy_adv_ckpt, tmp_path):
    model = LatentSearchModule(ckpt=toy_adv_ckpt).model
    codes = np.random.default_rng(0).normal(size=(300, 2)) * 4
    f = logit_field(model, codes, 0.03, res=20)
    assert f["logit"].shape == (20, 20) and f["x"].min() < -3 and f["y"].max() > 3  # the prior's ±3 square at least
    i, j = 7, 13
    z = torch.tensor([[f["x"][i, j], f["y"][i, j]]], dtype=torch.float32)
    with torch.no_grad():
        assert f["logit"][i, j] == pytest.approx(model.discriminator(z, torch.tensor([0.03])).item(), rel=1e-5,
                                                abs=1e-6)  # a batch of 400 vs one row: float32 rounding
    image_model = LatentSearchModule(ckpt=image_ckpt(tmp_path / "adv.ckpt", (1, 8, 8))).model  # 4-D latents
    assert logit_field(image_model, codes, 0.03) is None


def test_validation_figure_shows_images_at_native_size(tmp_path):
    """SampleFigures' per-validation figure: panels named as given, images at native size."""
    x = np.random.default_rng(0).uniform(-1, 1, size=(16, 1, 28, 28)).astype(np.float32)
    save_search_figure(str(tmp_path / "f.png"), {"data": x, "reconstruction": x}, {})
    w, h = Image.open(tmp_path / "f.png").size
    assert w >= 2 * (10 * 30 + 2) and h > 2 * 30  # two native grids of up to 10 columns (16 images: 10 + 6)


# -- end of training ---------------------------------------------------------------------------------------------
def fit(tiny_trainer, model, dm, root, logger=None):
    """A 5-step fit with the end-of-training figures (SampleFigures) written into `root`."""
    t = tiny_trainer(logger=logger or False, default_root_dir=str(root), callbacks=[SampleFigures(num=8)])
    t.fit(model, datamodule=dm)
    return t


def test_phase2_writes_sigma_accuracy(tiny_trainer, toy_ae_ckpt, tmp_path):
    logger = ImageLogger()
    model = AdversarialModule(autoencoder_ckpt=toy_ae_ckpt, d_hidden=16, d_depth=1, num_levels=6)
    t = fit(tiny_trainer, model, Toy2DDataModule(train_size=512, val_size=300, batch_size=128), tmp_path / "p2",
            logger=logger)
    d = tmp_path / "p2"
    assert (d / "sigma_accuracy.png").stat().st_size > 1000
    assert logger.images["adversarial/sigma_accuracy"] == [str(d / "sigma_accuracy.png")]
    rec = json.loads((d / "sigma_accuracy.json").read_text())
    assert rec["step"] == t.global_step == 5 and rec["num_codes"] == 300  # the whole validation set
    np.testing.assert_allclose(rec["sigmas"], model.ladder.sigmas.tolist())
    for key in ("acc_q", "acc_p"):
        assert len(rec[key]) == 6 and all(0 <= a <= 1 for a in rec[key])
        assert all(abs(a * 300 - round(a * 300)) < 1e-3 for a in rec[key])  # fractions of the 300 codes

    loader = t.datamodule.val_dataloader()
    rng = torch.get_rng_state()
    again = sigma_accuracy(model, loader)
    assert torch.equal(torch.get_rng_state(), rng)  # its own noise: the training stream is untouched
    assert again[1] == rec["acc_q"] and again[2] == rec["acc_p"]  # and seeded: the same numbers
    model.discriminator.forward = lambda z, s: torch.ones(len(z))  # D says 'data' everywhere
    _, acc_q, acc_p, _, fakes = sigma_accuracy(model, loader, max_codes=100)
    assert acc_q == [1.0] * 6 and acc_p == [0.0] * 6 and fakes.startswith("prior")
    # discriminator guidance's D_g is scored against what it learns from: its samples of s_θ, not prior draws
    model.fake_score_net, model.fakes = torch.nn.Identity(), torch.full((50, 2), 1e3)
    model.discriminator.forward = lambda z, s: (z.norm(dim=1) < 100).float() * 2 - 1  # 'fake' only far out
    _, _, acc_p, _, fakes = sigma_accuracy(model, loader, max_codes=100)
    assert acc_p == [1.0] * 6 and fakes.startswith("samples of s_θ")
    assert rec["fakes"].startswith("prior")


def kept_figures(monkeypatch) -> list:
    """The figures drawn from now on, kept open to look into (plt.close appends instead)."""
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    return figures


def cell(img: np.ndarray, fig, r: int, c: int, side: int) -> np.ndarray:
    """Image (r, c) of a labelled grid's (first) block in its PNG: the grid's axes sit at whole pixels."""
    box = fig.axes[0].get_window_extent()
    left, top = round(box.x0), img.shape[0] - round(box.y1)
    y, x = top + 2 + r * (side + 2), left + 2 + c * (side + 2)
    return img[y:y + side, x:x + side]


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.texts]


def test_phase1_writes_reconstruction_pairs(tiny_trainer, tmp_path, monkeypatch):
    """Labelled rows: a row of data above the row of its reconstructions, 10 a row, digits enlarged ×4."""
    logger, figures = ImageLogger(), kept_figures(monkeypatch)
    model = ReconstructionModule(data_shape=[1, 8, 8], latent_dim=4, hidden=16, depth=1, tanh_output=True)
    t = fit(tiny_trainer, model, DigitsDataModule(batch_size=32), tmp_path, logger=logger)
    path = tmp_path / "reconstructions.png"
    assert logger.images["reconstruction/pairs"] == [str(path)]
    img = np.asarray(Image.open(path).convert("RGB"))
    fig = figures[-1]
    # 32 pairs (one validation batch): 4 rows of data, each above its row of reconstructions
    assert texts(fig)[:8] == ["data", "reconstruction"] * 4 and "reconstruction" in texts(fig)[-1]
    assert img.shape[0] > 8 * 34 and img.shape[1] > 10 * 34
    x = next(iter(t.datamodule.val_dataloader()))[0][:11]
    with torch.no_grad():
        r = model.autoencoder.decode(model.autoencoder.encode(x, sample=False))
    for (row, col), want in {(0, 0): x[0], (1, 0): r[0], (0, 1): x[1], (1, 1): r[1], (2, 0): x[10],
                             (3, 0): r[10]}.items():
        np.testing.assert_allclose(cell(img, fig, row, col, 32).astype(int), as_png_pixels(want.numpy(), 4).astype(int),
                                   atol=1, err_msg=f"row {row}, column {col}")


def test_toy_phase1_draws_data_to_reconstruction_pairs(tiny_trainer, tmp_path, monkeypatch):
    """Arrows from x to G(E(x)) for 60 pairs; beside them data and reconstructions in matching colours."""
    figures = kept_figures(monkeypatch)
    fit(tiny_trainer, ReconstructionModule(latent_dim=2, hidden=16, depth=1),
        Toy2DDataModule(train_size=512, batch_size=128), tmp_path)
    assert (tmp_path / "reconstructions.png").stat().st_size > 1000
    left, right = figures[-1].axes[:2]
    (arrows,) = [c for c in left.collections if type(c).__name__ == "Quiver"]
    assert arrows.N == 60 and "G(E(x))" in left.get_title()
    data, recon = right.collections[:2]
    assert len(data.get_offsets()) == len(recon.get_offsets()) == 128  # one validation batch: each x, its G(E(x))
    np.testing.assert_array_equal(data.get_array(), recon.get_array())  # the same colour for x and G(E(x))


def fake_inverse(n: int, pasted: bool) -> dict:
    rng = np.random.default_rng(0)
    keys = ("truth", "observed", "mask", "dsls", "baseline") + (("dsls_pasted",) if pasted else ())
    return {k: rng.uniform(-1, 1, size=(n, 1, 8, 8)).astype(np.float32) for k in keys}


@pytest.mark.parametrize("pasted", [False, True])
def test_inverse_figure_labels_its_columns_and_rows_and_shows_16_images(tmp_path, monkeypatch, pasted):
    figures, arrays = kept_figures(monkeypatch), fake_inverse(100, pasted)
    save_inverse_figure(str(tmp_path / "inverse-inpaint.png"), arrays, task="inpaint")
    img, fig = np.asarray(Image.open(tmp_path / "inverse-inpaint.png").convert("RGB")), figures[-1]
    cols = ["observed", "DS-LS", *(["DS-LS\npasted"] if pasted else []), "baseline", "truth"]
    assert [t for t in texts(fig) if t in cols] == cols * 2  # two blocks of 8 rows, each with its column labels
    assert [t for t in texts(fig) if t.startswith("#")] == [f"#{i}" for i in range(16)]
    assert texts(fig)[-1].startswith("inpaint: 16 of 100 held-out images")
    assert img.shape[0] >= 8 * 66 and img.shape[1] >= 2 * len(cols) * 66  # was 274 × 138 px, 8 images
    keys = ["observed", "dsls", *(["dsls_pasted"] if pasted else []), "baseline", "truth"]
    for i in (0, 5):
        for j, k in enumerate(keys):  # 8×8 digits enlarged ×8, in the order of the labels
            np.testing.assert_allclose(cell(img, fig, i, j, 64).astype(int), as_png_pixels(arrays[k][i], 8).astype(int),
                                       atol=1, err_msg=f"image {i}, {k}")
    save_inverse_figure(str(tmp_path / "few.png"), fake_inverse(5, pasted))
    assert [t for t in texts(figures[-1]) if t.startswith("#")] == [f"#{i}" for i in range(5)]  # all, when fewer


def test_interpolation_figure_labels_paths_and_t(tmp_path, monkeypatch):
    figures = kept_figures(monkeypatch)
    rng = np.random.default_rng(0)
    linear, dsls = (rng.uniform(-1, 1, size=(64, 9, 1, 8, 8)).astype(np.float32) for _ in range(2))
    save_interpolation_figure(str(tmp_path / "interpolate.png"), linear, dsls)
    img, fig = np.asarray(Image.open(tmp_path / "interpolate.png").convert("RGB")), figures[-1]
    assert [t for t in texts(fig) if t.startswith("t=")] == [f"t={t:.3g}" for t in np.linspace(0, 1, 9)]
    rows = [t for t in texts(fig) if t.startswith("pair") or t == "DS-LS"]
    assert rows[:4] == ["pair 0: linear", "DS-LS", "pair 1: linear", "DS-LS"] and len(rows) == 16
    assert img.shape[0] >= 16 * 66 and img.shape[1] >= 9 * 66  # was 274 × 138 px
    for (r, c), want in {(0, 0): linear[0, 0], (1, 8): dsls[0, 8], (3, 4): dsls[1, 4]}.items():
        np.testing.assert_allclose(cell(img, fig, r, c, 64).astype(int), as_png_pixels(want, 8).astype(int), atol=1)


def test_labelled_layout_keeps_room_for_every_label():
    lay = labelled_layout([(530, 332)] * 2, 66, ["#10"] * 8, ["observed", "DS-LS pasted"], "a title")
    (l0, t0), (l1, t1) = lay["corners"]
    assert t0 == t1 > 15 + 13 and l0 >= 3 * 7 and l1 >= l0 + 332
    assert lay["size"][0] >= l1 + 332 and lay["size"][1] >= t0 + 530
    assert lay["col_labels"] == ["observed", "DS-LS\npasted"]  # wrapped to its 66-px column
