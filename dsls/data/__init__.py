"""One LightningDataModule per data set (DESIGN.md §2)."""
from __future__ import annotations

from dsls.data.digits import DigitsDataModule
from dsls.data.toy2d import Toy2DDataModule

__all__ = ["DigitsDataModule", "Toy2DDataModule"]
