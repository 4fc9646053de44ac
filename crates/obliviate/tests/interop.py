"""Reads an obliviate run with numpy alone, as the README documents (the interop test drives this).

Decodes every increment at its storage precision (f32, bf16, f16, q8; zstd-compressed or not), folds theta0 + the
increments in float32 in block order, and prints one JSON object: per-tensor SHA-256 of the
decoded float32 values of the first increment and optimizer state, whether the fold equals the
served model bit for bit, whether the latest keyframe with its shift (the sum of the shift-tree
nodes on its path) plus the increments after it does (chains with keyframes), and (f32 files)
whether safetensors.numpy reads the same values.
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


def add(a, b):
    return {n: (a[n] + b[n]).astype(np.float32) for n in a}


def theta_by_keyframe(run, manifest):
    """theta_B as the README defines it: latest keyframe + its shift + the increments after it."""
    blocks = manifest["blocks"]
    keyed = [b for b in blocks if b.get("theta")]
    if not keyed:
        return None
    every = manifest["config"]["storage"]["keyframe_every"]
    last = keyed[-1]
    theta = read_chain_file(f"{run}/{last['theta']['file']}")
    shifts = manifest.get("shifts", {})
    node, shift = len(blocks) // every + last["index"] // every - 1, None
    while node >= 1:  # leaf first, then each parent up to the root
        if str(node) in shifts:
            s = read_chain_file(f"{run}/{shifts[str(node)]['file']}")
            shift = s if shift is None else add(shift, s)
        node //= 2
    if shift is not None:
        theta = add(theta, shift)
    for block in blocks[last["index"] :]:
        theta = add(theta, read_chain_file(f"{run}/{block['delta']['file']}"))
    return theta


def bit_equal(a, b):
    return all(a[n].dtype == np.float32 and np.array_equal(a[n].view(np.uint32), b[n].view(np.uint32)) for n in b)


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
exact = bit_equal(theta, model)
result = {
    "delta1": digests(read_chain_file(f"{run}/{first['delta']['file']}")),
    "opt1": digests(read_chain_file(f"{run}/{first['opt']['file']}")),
    "delta1_shapes": {
        n: list(v.shape) for n, v in read_chain_file(f"{run}/{first['delta']['file']}").items()
    },
    "fold_equals_model": exact,
}
keyed = theta_by_keyframe(run, manifest)
if keyed is not None:
    result["keyframe_fold_equals_model"] = bit_equal(keyed, model)
storage = manifest["config"].get("storage", {"delta": "f32"})
if storage["delta"] == "f32":
    from safetensors.numpy import load_file

    lib = load_file(f"{run}/{first['delta']['file']}")
    result["safetensors_reads_the_same"] = digests(lib) == result["delta1"]
print(json.dumps(result))
