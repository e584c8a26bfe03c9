"""One LightningDataModule per data set (docs/datasets.md)."""
from __future__ import annotations

from dsls.data.celebahq import CelebAHQDataModule
from dsls.data.cifar10 import CIFAR10DataModule
from dsls.data.digits import DigitsDataModule, TintedDigitsDataModule
from dsls.data.imagefolder import ImageFolderDataModule
from dsls.data.images import ImageDataModule
from dsls.data.lsun import LSUNDataModule
from dsls.data.mnist import MNISTDataModule
from dsls.data.toy2d import Toy2DDataModule
from dsls.errors import MissingDataError

__all__ = ["CIFAR10DataModule", "CelebAHQDataModule", "DigitsDataModule", "ImageDataModule", "ImageFolderDataModule",
           "LSUNDataModule", "MNISTDataModule", "MissingDataError", "TintedDigitsDataModule", "Toy2DDataModule"]
