"""Image grids. Plain grids (torchvision make_grid / save_image) put one PNG pixel on each data pixel, with 2 px of
white padding and up to 10 columns; tiny images are first enlarged (nearest) by the integer factor
max(1, ⌊32 / side⌋), so that they can be seen: 8×8 digits ×4 (32 px), 16 px ×2, 28-px MNIST and anything larger ×1.

Labelled grids add row and column labels and a title around such a grid (matplotlib text, placed in pixel units so
the grid keeps one figure pixel per grid pixel). Their cells are enlarged to at least 64 px by default, so a short
column label ('DS-LS', 't=0.5') fits over each column."""
from __future__ import annotations

import math
import textwrap
from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torchvision.utils import make_grid, save_image

GRID_PADDING, GRID_MAX_COLUMNS, GRID_MAX_IMAGES, MIN_SIDE = 2, 10, 100, 32
LABELLED_MIN_SIDE = 64  # a labelled grid's cells: wide enough for a label of about 9 characters at font size 8
CHAR_PX = 7  # about how wide one character of the labels is, in pixels (DejaVu Sans at 9 pt, 100 dpi)


def upscaled(x: torch.Tensor, min_side: int = MIN_SIDE) -> torch.Tensor:
    """Images (N, C, H, W) enlarged by the integer factor ⌊min_side / side⌋ (nearest), so tiny ones (8×8 digits)
    can be seen in a PNG; min_side px and larger (and 28-px MNIST) stay as they are."""
    k = max(1, min_side // x.shape[-1])
    return torch.nn.functional.interpolate(x, scale_factor=k, mode="nearest") if k > 1 else x


def grid_columns(n: int) -> int:
    """About square, at most GRID_MAX_COLUMNS wide."""
    return max(1, min(GRID_MAX_COLUMNS, math.ceil(math.sqrt(n))))


def image_grid(x: np.ndarray, nrow: int = 10, n: int = 100) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] → an (H', W', C) grid in [0, 1]."""
    g = make_grid(torch.as_tensor(x[:n]).clamp(-1, 1), nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1)
    return g.permute(1, 2, 0).numpy()


def native_grid(x, n: int = GRID_MAX_IMAGES, nrow: Optional[int] = None, min_side: int = MIN_SIDE) -> torch.Tensor:
    """The first n images (N, C, H, W) in [-1, 1] as one (3, H', W') grid in [0, 1], at native size (tiny ones
    upscaled), white padding."""
    x = upscaled(torch.as_tensor(np.asarray(x[:n]), dtype=torch.float32).clamp(-1, 1), min_side)
    return make_grid(x, nrow=nrow or grid_columns(len(x)), padding=GRID_PADDING, normalize=True, value_range=(-1, 1),
                     pad_value=1)


def save_image_grid(path: str, x, n: int = GRID_MAX_IMAGES, nrow: Optional[int] = None) -> str:
    """A full-resolution PNG of up to n images (see native_grid)."""
    save_image(native_grid(x, n, nrow), path)
    return path


def wrap(text: str, width_px: float, min_chars: int = 4) -> str:
    """Each line of text wrapped to about width_px pixels."""
    chars = max(min_chars, int(width_px // CHAR_PX))
    return "\n".join(textwrap.fill(line, chars, break_long_words=False) if line else line
                     for line in text.split("\n"))


def _lines(text: str) -> int:
    return text.count("\n") + 1 if text else 0


def labelled_layout(grid_shapes: Sequence[tuple[int, int]], cell: int, row_labels: Sequence[str] = (),
                    col_labels: Sequence[str] = (), title: str = "") -> dict:
    """Where the parts of a labelled figure go, in pixels from its top-left corner: {"size": (W, H), "corners": the
    (left, top) of each block's grid, "title" and "col_labels": wrapped to fit}. grid_shapes: (height, width) of each
    block's grid; cell: the side of one image plus its padding. Image (r, c) of block b starts at
    corners[b] + GRID_PADDING + (c, r) · cell."""
    label_w = CHAR_PX * max((len(s) for s in row_labels), default=0) + 12 * bool(row_labels)
    col_text = [wrap(s, cell - 4) for s in col_labels]
    col_h = 13 * max((_lines(s) for s in col_text), default=0) + 6 * bool(col_labels)
    block_w = [label_w + w + 12 for _, w in grid_shapes]
    W = sum(block_w)
    title = wrap(title, W - 8, min_chars=30)
    top = 15 * _lines(title) + 8 + col_h
    corners = [(sum(block_w[:b]) + label_w, top) for b in range(len(grid_shapes))]
    return {"size": (W, top + max(h for h, _ in grid_shapes) + 6), "corners": corners, "title": title,
            "col_labels": col_text}


def save_labelled_grid(path: str, images, row_labels: Sequence[str] = (), col_labels: Sequence[str] = (),
                       title: str = "", blocks: int = 1, min_side: int = LABELLED_MIN_SIDE, dpi: int = 100) -> str:
    """images (R, K, C, H, W) in [-1, 1]: R rows of K images, drawn as a grid (one figure pixel per grid pixel, tiny
    images enlarged to min_side) with row labels on the left, column labels on top and a title; blocks > 1 splits
    the rows into that many grids side by side (each with its column labels), so a figure of many rows stays
    readable on a screen. Returns path."""
    images = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    rows, cols = images.shape[:2]
    per_block = -(-rows // max(1, blocks))
    grids = [native_grid(images[i:i + per_block].flatten(0, 1), n=per_block * cols, nrow=cols, min_side=min_side)
             .permute(1, 2, 0).numpy() for i in range(0, rows, per_block)]
    cell = upscaled(images[:1, 0], min_side).shape[-1] + GRID_PADDING
    layout = labelled_layout([g.shape[:2] for g in grids], cell, row_labels, col_labels, title)
    W, H = layout["size"]
    fig = plt.figure(figsize=(W / dpi, H / dpi), dpi=dpi)
    for b, (g, (left, top)) in enumerate(zip(grids, layout["corners"])):
        ax = fig.add_axes((left / W, (H - top - g.shape[0]) / H, g.shape[1] / W, g.shape[0] / H))
        ax.imshow(g, interpolation="nearest")
        ax.axis("off")
        for j, s in enumerate(layout["col_labels"][:cols]):
            fig.text((left + GRID_PADDING + (j + 0.5) * cell - 1) / W, 1 - (top - 3) / H, s, ha="center",
                     va="bottom", fontsize=8)
        for i, s in enumerate(row_labels[b * per_block:(b + 1) * per_block]):
            fig.text((left - 6) / W, 1 - (top + GRID_PADDING + (i + 0.5) * cell - 1) / H, s, ha="right",
                     va="center", fontsize=8)
    if layout["title"]:
        fig.text(0.5, 1 - 5 / H, layout["title"], ha="center", va="top", fontsize=9)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
