"""A data module rebuilt from the settings a checkpoint recorded (its `datamodule_hyper_parameters`, with
`_class_path`) or a config's `data:` section: the real data a model was trained on, for its metrics' reference images
and the anomaly task's test sets."""
from __future__ import annotations

import importlib
from typing import Optional


def build_datamodule(hp: dict, data_dir: Optional[str] = None):
    """The data module of settings `hp` (with `_class_path`), set up for fit, without random flips (a reference is
    read as it is); data_dir replaces its folder when given."""
    module_path, cls_name = hp["_class_path"].rsplit(".", 1)
    init = {k: v for k, v in hp.items() if not k.startswith("_")}
    if "random_flip" in init:
        init["random_flip"] = False
    if data_dir:
        init["data_dir"] = data_dir
    dm = getattr(importlib.import_module(module_path), cls_name)(**init)
    dm.prepare_data()
    dm.setup("fit")
    return dm
