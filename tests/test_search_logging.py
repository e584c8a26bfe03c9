"""The search sends what it measured to any Lightning logger: every number as search/<sampler>/<metric> (the W&B
sweeps optimise search/langevin/fid), and, where the logger takes them, a results table and the sample images."""
import csv
import json

import pytest
from lightning.pytorch.loggers import CSVLogger, Logger

from dsls.phases.search import LatentSearchModule

from conftest import make_tiny_trainer  # the tiny_trainer fixture's factory, for the search helper

SAMPLERS = {"none": {}, "langevin": {"steps_per_level": 2, "eps0": 1e-3}}


class FakeLogger(Logger):
    """Keeps every call, as a WandbLogger would send them."""

    name, version = "fake", 0

    def __init__(self):
        super().__init__()
        self.metrics, self.tables, self.images = {}, {}, {}

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_table(self, key, columns=None, data=None, dataframe=None, step=None):
        self.tables[key] = (columns, data)

    def log_image(self, key, images, step=None, **kwargs):
        self.images[key] = (list(images), kwargs)


def search(ckpt, out_dir, logger) -> dict:
    model = LatentSearchModule(ckpt=ckpt, out_dir=str(out_dir), num_samples=64, batch_size=32, num_levels=3,
                               samplers=SAMPLERS)
    make_tiny_trainer(inference_mode=False, logger=logger).predict(model, return_predictions=False)
    return json.loads((out_dir / "results.json").read_text())


def numbers(results: dict) -> dict:
    return {f"search/{n}/{k}": v for n, r in results.items() for k, v in r.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def test_search_logs_every_metric_to_a_csv_logger(toy_adv_ckpt, tmp_path):
    logger = CSVLogger(str(tmp_path / "logs"), name="search")
    results = search(toy_adv_ckpt, tmp_path / "out", logger)
    want = numbers(results)
    assert {"search/langevin/modes", "search/langevin/rev_kl", "search/none/hq_fraction", "search/langevin/nfe"} <= \
        set(want)
    with open(tmp_path / "logs" / "search" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = {k: float(v) for row in rows for k, v in row.items() if v not in ("", None) and k.startswith("search/")}
    assert logged == pytest.approx({k: float(v) for k, v in want.items()})


def test_search_sends_table_and_images_where_the_logger_takes_them(toy_adv_ckpt, tmp_path):
    logger = FakeLogger()
    out = tmp_path / "out"
    results = search(toy_adv_ckpt, out, logger)
    assert logger.metrics == numbers(results)
    columns, rows = logger.tables["search/results"]
    assert [r[0] for r in rows] == ["none", "langevin"]
    lang = dict(zip(columns, rows[1]))
    for key in ("modes", "hq_fraction", "rev_kl", "nfe", "seconds_per_sample"):
        assert lang[key] == results["langevin"][key], key
    assert json.loads(lang["settings"]) == results["langevin"]["settings"] and lang["num_levels"] == 3
    assert logger.images["search/samples"][0] == [str(out / "samples.png")]
    for name in SAMPLERS:
        images, kw = logger.images[f"search/{name}/samples"]
        assert images == [str(out / f"samples-{name}.png")] and (out / f"samples-{name}.png").is_file()
        assert kw["caption"][0].startswith(name)
    assert "ε₀=0.001, T=2" in logger.images["search/langevin/samples"][1]["caption"][0]


def test_search_without_a_logger_still_writes_its_figures(toy_adv_ckpt, tmp_path):
    search(toy_adv_ckpt, tmp_path, False)
    assert {"samples.png", "samples-none.png", "samples-langevin.png"} <= {p.name for p in tmp_path.iterdir()}
