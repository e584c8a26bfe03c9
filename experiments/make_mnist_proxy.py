"""An MNIST-format proxy for machines without MNIST: 60,000 + 10,000 28 × 28 images made from scikit-learn's 8 × 8
digits (bundled, no download), each upsampled to 20 px, given a random stroke weight and placed at a random offset,
written as MNIST's four idx files in <out>/MNIST/raw, so the real MNIST loader reads them:

    python experiments/make_mnist_proxy.py --out data/mnist-proxy
    python experiments/run_pipeline.py --config-dir configs/mnist --profile cpu --data.data_dir=data/mnist-proxy \
        --data.download=false

Train images come from 80 % of the digits (a stratified split, seed 0), test images from the other 20 %, so no test
image is a copy of a training digit. It is a proxy for the format and the size, not for MNIST's statistics: results
on it are not results on MNIST.
"""
from __future__ import annotations

import argparse
import os

import numpy as np


def proxy_images(images: np.ndarray, labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 (28, 28) images drawn from `images` (8 × 8, 0..16): bilinear upsampling to 20 px, a random stroke
    weight (a gamma on the intensity), a random offset."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(images), n)
    x = torch.from_numpy(images[pick].astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False).squeeze(1).clamp(0, 1).numpy()
    x = x ** np.exp(rng.uniform(np.log(0.5), np.log(2.0), (n, 1, 1)))  # stroke weight: < 1 thickens, > 1 thins
    out = np.zeros((n, 28, 28), np.uint8)
    dy, dx = rng.integers(0, 9, n), rng.integers(0, 9, n)
    for i in range(n):
        out[i, dy[i]:dy[i] + 20, dx[i]:dx[i] + 20] = np.round(x[i] * 255)
    return out, labels[pick].astype(np.uint8)


def write_idx(path: str, arr: np.ndarray) -> None:
    """MNIST's idx format: magic (0, 0, 0x08 = ubyte, ndim), big-endian int32 sizes, then the bytes."""
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape))
        f.write(np.ascontiguousarray(arr, np.uint8).tobytes())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/mnist-proxy")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    train, test = train_test_split(np.arange(len(d.target)), test_size=0.2, stratify=d.target, random_state=0)
    raw = os.path.join(a.out, "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    for split, rows, n in (("train", train, 60000), ("t10k", test, 10000)):
        x, y = proxy_images(d.images[rows], d.target[rows], n, a.seed + (split == "t10k"))
        write_idx(os.path.join(raw, f"{split}-images-idx3-ubyte"), x)
        write_idx(os.path.join(raw, f"{split}-labels-idx1-ubyte"), y)
    print(f"wrote {raw}: 60,000 train and 10,000 t10k images")


if __name__ == "__main__":
    main()
