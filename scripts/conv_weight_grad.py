"""Times a convolution's weight gradient two ways in PyTorch (CPU, 2 threads), on the CNN's and
ResNet-18's layer shapes: burn's generic rule (a convolution over the swapped batch and channel
axes, what burn-tch 0.21 runs) against libtorch's native `convolution_backward`. The figures
behind ARCHITECTURE decision 23; `python3 scripts/conv_weight_grad.py`.
"""
import time

import torch

torch.set_num_threads(2)
torch.manual_seed(0)


def swapped(x, g, pad):
    return torch.nn.functional.conv2d(x.transpose(0, 1), g.transpose(0, 1), None, padding=pad).transpose(0, 1)


def native(x, g, w, pad):
    return torch.ops.aten.convolution_backward(
        g, x, w, [w.shape[0]], [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, [False, True, False])[1]


def timed(f, reps=3):
    f()
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps * 1000


for n, cin, cout, side in [(128, 3, 32, 32), (128, 32, 32, 32), (128, 32, 64, 16), (128, 64, 64, 16),
                           (32, 64, 64, 32), (32, 128, 128, 16), (32, 256, 256, 8), (32, 512, 512, 4)]:
    x, w, g = torch.randn(n, cin, side, side), torch.randn(cout, cin, 3, 3), torch.randn(n, cout, side, side)
    assert torch.allclose(swapped(x, g, 1), native(x, g, w, 1), rtol=1e-3, atol=5e-2)
    a, b = timed(lambda: swapped(x, g, 1)), timed(lambda: native(x, g, w, 1))
    print(f"batch {n}, {cin} -> {cout} channels, {side}x{side}: swapped-axes {a:.1f} ms, native {b:.1f} ms")
