"""Hand-written models covering the op patterns structural pruning must handle."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _cbr(cin, cout, k=3, groups=1, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class ConcatNet(nn.Module):
    """Two branches concatenated along channels (Inception/DenseNet style)."""

    def __init__(self):
        super().__init__()
        self.stem = _cbr(3, 16)
        self.a = _cbr(16, 12)
        self.b = _cbr(16, 20, k=1)
        self.mix = _cbr(32, 24)
        self.head = nn.Linear(24, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.a(x), self.b(x), x[:, :0]], dim=1) if False else torch.cat([self.a(x), self.b(x)], 1)
        x = self.mix(x)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class SplitNet(nn.Module):
    """torch.split / chunk of a conv output into branches that are merged again (GLU + split)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.left = nn.Conv2d(16, 16, 3, padding=1)
        self.right = nn.Conv2d(16, 16, 1)
        self.glu_in = nn.Conv2d(32, 48, 1)
        self.out = nn.Conv2d(24, 8, 1)

    def forward(self, x):
        a, b = torch.split(self.conv(x), 16, dim=1)
        y = torch.cat([self.left(a), self.right(b)], 1)
        p, q = self.glu_in(y).chunk(2, dim=1)
        return self.out(p * torch.sigmoid(q))


class DepthwiseNet(nn.Module):
    """MobileNet-style depthwise-separable blocks with a residual."""

    def __init__(self):
        super().__init__()
        self.stem = _cbr(3, 16)
        self.dw = _cbr(16, 16, groups=16)
        self.pw = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6())
        self.dw2 = _cbr(32, 64, groups=32)  # channel multiplier 2
        self.pw2 = nn.Sequential(nn.Conv2d(64, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.pw2(self.dw2(self.pw(self.dw(x))))
        return self.fc(x.mean((2, 3)))


class GroupedNet(nn.Module):
    """ResNeXt-style grouped convolution (whole groups are pruned) with GroupNorm."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.gn = nn.GroupNorm(8, 32)
        self.grouped = nn.Conv2d(32, 64, 3, padding=1, groups=4)
        self.proj = nn.Conv2d(64, 16, 1)
        self.fc = nn.Linear(16 * 8 * 8, 4)

    def forward(self, x):
        x = F.relu(self.gn(self.stem(x)))
        x = self.proj(F.relu(self.grouped(x)))
        return self.fc(torch.flatten(F.max_pool2d(x, 2), 1))


class LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.lstm = nn.LSTM(16, 32, num_layers=2, batch_first=True)
        self.fc = nn.Linear(32, 3)

    def forward(self, ids):
        y, _ = self.lstm(self.emb(ids))
        return self.fc(y[:, -1])


class GRUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 24)
        self.gru = nn.GRU(24, 20, bidirectional=True)
        self.fc = nn.Linear(40, 2)

    def forward(self, x):
        y, h = self.gru(torch.tanh(self.inp(x)))
        return self.fc(y.mean(0))


class UpsampleNet(nn.Module):
    """U-Net-like encoder/decoder: pooling, upsample, skip concatenation, transposed conv."""

    def __init__(self):
        super().__init__()
        self.enc1 = _cbr(3, 16)
        self.enc2 = _cbr(16, 32)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec = _cbr(48, 16)
        self.tconv = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        d = self.dec(torch.cat([self.up(e2), e1], 1))
        return self.out(F.interpolate(self.tconv(d), size=x.shape[-2:], mode="bilinear"))


class ShuffleNet(nn.Module):
    """ShuffleNet unit: grouped 1x1 convs and a channel shuffle (view-transpose-view)."""

    def __init__(self, g=4):
        super().__init__()
        self.g = g
        self.stem = _cbr(3, 32)
        self.g1 = nn.Conv2d(32, 32, 1, groups=g)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.g2 = nn.Conv2d(32, 32, 1, groups=g)
        self.expand = _cbr(32, 48, k=1)
        self.fc = nn.Linear(48, 6)

    def shuffle(self, x):
        b, c, h, w = x.shape
        return x.view(b, self.g, c // self.g, h, w).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x):
        x = self.stem(x)
        y = self.g2(self.dw(self.shuffle(F.relu(self.g1(x)))))
        x = self.expand(F.relu(x + y))
        return self.fc(x.mean((2, 3)))


class SENet(nn.Module):
    """Squeeze-and-excitation: channel gating by a small MLP of the pooled features."""

    def __init__(self):
        super().__init__()
        self.conv = _cbr(3, 32)
        self.fc1 = nn.Conv2d(32, 8, 1)
        self.fc2 = nn.Conv2d(8, 32, 1)
        self.conv2 = _cbr(32, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.conv(x)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        x = self.conv2(x * s)
        return self.head(x.mean((2, 3)))


class MultiIONet(nn.Module):
    """Two inputs (image + vector) and two outputs (class logits, a regression map)."""

    def __init__(self):
        super().__init__()
        self.img = _cbr(3, 24)
        self.vec = nn.Linear(7, 24)
        self.trunk = _cbr(24, 32)
        self.cls = nn.Linear(32, 5)
        self.reg = nn.Conv2d(32, 1, 1)

    def forward(self, image, vec):
        x = self.img(image) + self.vec(vec)[:, :, None, None]
        x = self.trunk(x)
        return self.cls(x.mean((2, 3))), self.reg(x)


class MHANet(nn.Module):
    """nn.MultiheadAttention in a pre-norm transformer block with an FFN."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Linear(10, 32)
        self.ln = nn.LayerNorm(32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.out = nn.Linear(32, 3)

    def forward(self, x):
        x = self.emb(x)
        h = self.ln(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.ffn(x)
        return self.out(x.mean(1))


def _img(n=2, s=16):
    return (torch.randn(n, 3, s, s, generator=torch.Generator().manual_seed(0)),)


CUSTOM_ZOO = {
    "concat": (ConcatNet, _img),
    "split_chunk": (SplitNet, _img),
    "depthwise": (DepthwiseNet, _img),
    "grouped": (GroupedNet, _img),
    "lstm": (LSTMNet, lambda: (torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(0)),)),
    "gru": (GRUNet, lambda: (torch.randn(5, 2, 6, generator=torch.Generator().manual_seed(0)),)),
    "upsample": (UpsampleNet, _img),
    "channel_shuffle": (ShuffleNet, _img),
    "squeeze_excite": (SENet, _img),
    "multi_io": (MultiIONet, lambda: (_img()[0], torch.randn(2, 7, generator=torch.Generator().manual_seed(1)))),
    "mha": (MHANet, lambda: (torch.randn(2, 6, 10, generator=torch.Generator().manual_seed(0)),)),
}
