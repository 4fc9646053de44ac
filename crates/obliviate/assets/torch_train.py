"""PyTorch peer of `obliviate bench train`: the same models, shapes, optimizer and batch size.

Prints one JSON object {"model", "samples_per_s", "steps", "batch", "threads", "channels_last"}.
`--channels-last` is for reading obliviate's tch figures against PyTorch in the same layout; the
benchmark itself runs PyTorch's default (NCHW), as the scripts it stands for do.
Synthetic inputs and labels are made once; the loss is read back every step, as obliviate does
implicitly by finishing every step before the next.
"""
import argparse
import json
import time

import torch
from torch import nn


def mlp(inp, hidden, classes):
    layers, w = [], inp
    for h in hidden:
        layers += [nn.Linear(w, h), nn.Tanh()]
        w = h
    layers.append(nn.Linear(w, classes))
    return nn.Sequential(nn.Flatten(), *layers)


def lenet5(c, side, classes):
    pad = (32 - side) // 2
    s = ((side + 2 * pad - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * s * s, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, classes))


def cnn(c, side, classes):
    return nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (side // 4) ** 2, 512), nn.ReLU(), nn.Linear(512, classes))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.b1(self.c1(x)))
        out = self.b2(self.c2(out))
        return torch.relu(out + (self.down(x) if self.down is not None else x))


class ResNet18(nn.Module):
    def __init__(self, c, classes):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(c, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        blocks, cin = [], 64
        for i, cout in enumerate([64, 128, 256, 512]):
            blocks += [Block(cin, cout, 1 if i == 0 else 2), Block(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))


SHAPES = {"mlp": (1, 1, 600, 100), "mlp-small": (1, 1, 600, 100), "lenet5": (1, 28, 28, 10),
          "cnn": (3, 32, 32, 10), "resnet18": (3, 32, 32, 10)}


def build(name):
    c, h, w, k = SHAPES[name]
    if name == "mlp":
        return mlp(c * h * w, [1024, 512, 256, 128], k)
    if name == "mlp-small":
        return mlp(c * h * w, [128], k)
    if name == "lenet5":
        return lenet5(c, h, k)
    if name == "cnn":
        return cnn(c, h, k)
    return ResNet18(c, k)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--channels-last", action="store_true",
                   help="model and input in channels-last memory format (what obliviate's tch path uses for cnn and resnet18)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    c, h, w, k = SHAPES[a.model]
    model = build(a.model)
    model.train()
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(a.batch, c, h, w)
    y = torch.randint(0, k, (a.batch,))
    if a.channels_last:
        x = x.to(memory_format=torch.channels_last)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t
    print(json.dumps({"model": a.model, "samples_per_s": a.steps * a.batch / dt, "steps": a.steps,
                      "batch": a.batch, "threads": a.threads, "channels_last": a.channels_last, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
