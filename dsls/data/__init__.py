"""One LightningDataModule per data set (DESIGN.md §2)."""
from __future__ import annotations

from dsls.data.celebahq import CelebAHQDataModule
from dsls.data.cifar10 import CIFAR10DataModule
from dsls.data.digits import DigitsDataModule, TintedDigitsDataModule
from dsls.data.images import ImageDataModule, MissingDataError
from dsls.data.lsun import LSUNDataModule
from dsls.data.mnist import MNISTDataModule
from dsls.data.toy2d import Toy2DDataModule

__all__ = ["CIFAR10DataModule", "CelebAHQDataModule", "DigitsDataModule", "ImageDataModule", "LSUNDataModule",
           "MNISTDataModule", "MissingDataError", "TintedDigitsDataModule", "Toy2DDataModule"]
