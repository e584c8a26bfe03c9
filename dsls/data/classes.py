"""Class selection for the labelled data modules: `--data.classes=[...]` keeps only those classes for training and
validation, `--data.exclude_classes=[...]` drops those (one or the other, not both). The test split always keeps
every class, and the train split's examples of the excluded classes stay at hand (`excluded_train_set`): the
one-class-out anomaly protocol scores them as anomalies.

Classes are named by index (digits, MNIST, CIFAR-10, the toy mixtures' modes) or by folder name (ImageFolderDataModule);
the functions here take the valid names and give back indices.
"""
from __future__ import annotations

from typing import Sequence

import torch

from dsls.errors import ConfigError


def _show(names: Sequence) -> str:
    """The valid classes as a message shows them: 0..9 for a range of indices, else the names."""
    names = list(names)
    if names and names == list(range(len(names))):
        return f"0..{len(names) - 1}" if len(names) > 1 else "0"
    return ", ".join(map(str, names))


def _flag(name: str, values: Sequence) -> str:
    return f"--data.{name}=[{','.join(map(str, values))}]"


def kept_classes(classes: Sequence | None, exclude_classes: Sequence | None, names: Sequence,
                 what: str = "the data set") -> list[int] | None:
    """The indices (into `names`, the data set's classes in label order) of the classes training and validation keep,
    sorted; None when no selection is set (every class is kept). A name matches by equality or as text (folder names
    given as numbers on the command line). Raises ConfigError, naming the valid classes, for both settings at once, a
    class that is not one of `names`, or a selection that keeps no class."""
    if classes is not None and exclude_classes is not None:
        raise ConfigError(f"give {_flag('classes', classes)} or {_flag('exclude_classes', exclude_classes)}, not "
                          "both: one names the classes to keep, the other those to drop")
    if classes is None and exclude_classes is None:
        return None
    flag, given = ("classes", classes) if classes is not None else ("exclude_classes", exclude_classes)
    names, text = list(names), [str(n) for n in names]
    picked = set()
    for c in given:
        if c in names:
            picked.add(names.index(c))
        elif str(c) in text:
            picked.add(text.index(str(c)))
        else:
            raise ConfigError(f"{_flag(flag, given)}: {c!r} is not a class of {what}; its classes are {_show(names)}")
    kept = sorted(picked) if flag == "classes" else [i for i in range(len(names)) if i not in picked]
    if not kept:
        raise ConfigError(f"{_flag(flag, given)} leaves no class of {what} to train on (its classes are "
                          f"{_show(names)}): keep at least one")
    return kept


def keep_mask(labels, kept: Sequence[int] | None) -> torch.Tensor:
    """A bool tensor, True where the label is one of the `kept` class indices (everywhere when `kept` is None)."""
    labels = torch.as_tensor(labels)
    if kept is None:
        return torch.ones(len(labels), dtype=torch.bool)
    return torch.isin(labels, torch.as_tensor(list(kept), dtype=labels.dtype))


def class_mask(labels, classes: Sequence | None, exclude_classes: Sequence | None, num_classes: int) -> torch.Tensor:
    """True where a label (0 .. num_classes − 1) is kept by the selection (see kept_classes)."""
    return keep_mask(labels, kept_classes(classes, exclude_classes, range(num_classes)))
