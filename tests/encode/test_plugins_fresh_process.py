"""Files using encodings/layers registered outside `encode` must load in a fresh process."""

import subprocess
import sys
import textwrap

import torch
from torch import nn

import deepshrink
from deepshrink.quantize.lowbit import binarize
from deepshrink.quantize.pq import product_quantize


def _load_in_fresh_process(path, x_path):
    code = textwrap.dedent(f"""
        import sys, torch, deepshrink.encode as enc
        assert "deepshrink.quantize.lowbit" not in sys.modules and "deepshrink.quantize.pq" not in sys.modules
        m = enc.load({str(path)!r})
        x = torch.load({str(x_path)!r}, weights_only=True)
        with torch.no_grad():
            torch.save(m(x), {str(x_path)!r} + ".out")
    """)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    return torch.load(str(x_path) + ".out", weights_only=True)


def test_binarized_and_pq_files_load_without_importing_their_modules(tmp_path):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    x = torch.randn(4, 32)
    torch.save(x, tmp_path / "x.pt")
    for name, model in (("bin", binarize(base, method="xnor", keep_first_last=False)),
                        ("pq", product_quantize(base, subvector=4, centroids=16))):
        path = tmp_path / f"{name}.dsz"
        deepshrink.encode.save(model.eval(), path)
        with torch.no_grad():
            ref = model(x)
        assert torch.equal(_load_in_fresh_process(path, tmp_path / "x.pt"), ref), name
