"""Reads an obliviate run with numpy alone, as the README documents (the interop test drives this).

Decodes every increment at its storage precision (f32, bf16, f16, q8; zstd-compressed or not), folds theta0 + the
increments in float32 in block order, and prints one JSON object: per-tensor SHA-256 of the
decoded float32 values of the first increment and optimizer state, whether the fold equals the
served model bit for bit, and (f32 files) whether safetensors.numpy reads the same values.
"""
import hashlib
import json
import sys

import numpy as np


def read_chain_file(path):
    """name -> float32 array, for any file obliviate writes (README: Reading a chain from Python)."""
    raw = open(path, "rb").read()
    if path.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdDecompressor().decompress(raw)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    meta = json.loads(header["__metadata__"]["obliviate"])

    def stored(name):
        info = header[name]
        a, b = info["data_offsets"]
        return info["dtype"], info["shape"], body[a:b]

    out = {}
    for name in meta["order"]:
        dtype, shape, buf = stored(name)
        if dtype == "F32":
            x = np.frombuffer(buf, "<f4")
        elif dtype == "BF16":
            x = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif dtype == "F16":
            x = np.frombuffer(buf, "<f2").astype(np.float32)
        else:  # q8: I8 codes x = code * scale, U8 codes x = (code * scale)^2, one scale per chunk
            scale = np.frombuffer(stored(name + ".q8_scale")[2], "<f4")
            codes = np.frombuffer(buf, np.int8 if dtype == "I8" else np.uint8).astype(np.float32)
            x = codes * np.repeat(scale, meta["chunk"])[: codes.size]
            if dtype == "U8":
                x = x * x
        out[name] = x.reshape(shape)
    return out


def digests(tensors):
    return {n: hashlib.sha256(v.astype("<f4").tobytes()).hexdigest() for n, v in tensors.items()}


run = sys.argv[1]
manifest = json.load(open(f"{run}/manifest.json"))
theta = read_chain_file(f"{run}/{manifest['theta0']['file']}")
first = manifest["blocks"][0]
for block in manifest["blocks"]:
    delta = read_chain_file(f"{run}/{block['delta']['file']}")
    for name in theta:
        theta[name] = (theta[name] + delta[name]).astype(np.float32)
model = read_chain_file(f"{run}/{manifest['model_file']['file']}")
exact = all(
    theta[n].dtype == np.float32 and np.array_equal(theta[n].view(np.uint32), model[n].view(np.uint32))
    for n in model
)
result = {
    "delta1": digests(read_chain_file(f"{run}/{first['delta']['file']}")),
    "opt1": digests(read_chain_file(f"{run}/{first['opt']['file']}")),
    "delta1_shapes": {
        n: list(v.shape) for n, v in read_chain_file(f"{run}/{first['delta']['file']}").items()
    },
    "fold_equals_model": exact,
}
storage = manifest["config"].get("storage", {"delta": "f32"})
if storage["delta"] == "f32":
    from safetensors.numpy import load_file

    lib = load_file(f"{run}/{first['delta']['file']}")
    result["safetensors_reads_the_same"] = digests(lib) == result["delta1"]
print(json.dumps(result))
