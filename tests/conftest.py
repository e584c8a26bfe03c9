import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _dsls_cache(tmp_path_factory):
    """Caches (the digits classifier, reference statistics) go to a per-session folder, never to ~/.cache."""
    old = os.environ.get("DSLS_CACHE")
    os.environ["DSLS_CACHE"] = str(tmp_path_factory.mktemp("dsls-cache"))
    yield
    if old is None:
        os.environ.pop("DSLS_CACHE", None)
    else:
        os.environ["DSLS_CACHE"] = old
