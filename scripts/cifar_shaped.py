#!/usr/bin/env python3
"""Writes a generated dataset in the CIFAR-10 binary format (numpy only).

The real CIFAR-10 files are not on the development machines. Storage and I/O figures of a
ResNet-18 chain (bytes on disk, bytes read per request) depend on the model's parameter
count and the chain's length, not on the pixels, so a generated dataset of the same shape
stands in for them (docs/BENCHMARKS.md says so wherever it is used). Accuracy figures on it
mean nothing.

Each record is one label byte (0..=9) and 3 × 32 × 32 channel-planar pixel bytes, as in
`cifar-10-batches-bin/`: `data_batch_1.bin` … `data_batch_5.bin` share the training
records, `test_batch.bin` holds the test records. Each class is a smooth colour pattern
plus noise, so a model can learn something. Deterministic for a given --seed.

    python3 scripts/cifar_shaped.py --out /tmp/cifar --train 500 --test 100
    obliviate train --dataset cifar10 --data-dir /tmp/cifar --model resnet18 …
"""

import argparse
from pathlib import Path

import numpy as np


def records(n: int, rng: np.random.Generator) -> bytes:
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    y, x = np.mgrid[0:32, 0:32] / 31.0
    out = np.empty((n, 1 + 3 * 32 * 32), dtype=np.uint8)
    for i, label in enumerate(labels):
        phase = label * np.pi / 5.0
        planes = [
            np.sin(2 * np.pi * (x * np.cos(phase + c) + y * np.sin(phase + c)) + c)
            for c in range(3)
        ]
        img = 127.5 + 90.0 * np.stack(planes) + rng.normal(0.0, 25.0, size=(3, 32, 32))
        out[i, 0] = label
        out[i, 1:] = np.clip(img, 0, 255).astype(np.uint8).reshape(-1)
    return out.tobytes()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder to create")
    p.add_argument("--train", type=int, default=500, help="training records (over 5 batches)")
    p.add_argument("--test", type=int, default=100, help="test records")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.train < 5 or a.test < 1:
        p.error("--train must be at least 5 and --test at least 1")
    rng = np.random.default_rng(a.seed)
    folder = a.out / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [a.train // 5 + (1 if i < a.train % 5 else 0) for i in range(5)]
    for i, n in enumerate(sizes, start=1):
        (folder / f"data_batch_{i}.bin").write_bytes(records(n, rng))
    (folder / "test_batch.bin").write_bytes(records(a.test, rng))
    print(f"{a.train} training and {a.test} test records in {folder}")


if __name__ == "__main__":
    main()
