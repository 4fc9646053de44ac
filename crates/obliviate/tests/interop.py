"""Reads an obliviate run with Python's safetensors + numpy (the interop test drives this).

Prints one JSON object: per-tensor sums of the first increment and of the served model, and
whether theta0 + sum of increments (float32, in block order) equals the model bit for bit.
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file

run = sys.argv[1]
manifest = json.load(open(f"{run}/manifest.json"))
theta = load_file(f"{run}/{manifest['theta0']['file']}")
first = load_file(f"{run}/{manifest['blocks'][0]['delta']['file']}")
for block in manifest["blocks"]:
    delta = load_file(f"{run}/{block['delta']['file']}")
    for name in theta:
        theta[name] = (theta[name] + delta[name]).astype(np.float32)
model = load_file(f"{run}/{manifest['model_file']['file']}")
exact = all(
    theta[n].dtype == np.float32 and np.array_equal(theta[n].view(np.uint32), model[n].view(np.uint32))
    for n in model
)
print(json.dumps({
    "delta1_sums": {n: float(v.astype(np.float64).sum()) for n, v in first.items()},
    "delta1_shapes": {n: list(v.shape) for n, v in first.items()},
    "model_sums": {n: float(v.astype(np.float64).sum()) for n, v in model.items()},
    "fold_equals_model": exact,
}))
