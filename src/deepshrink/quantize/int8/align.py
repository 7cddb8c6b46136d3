"""Channel alignment: pad a conv's output channels with zero filters when that makes int8 faster.

Why: the int8 CPU kernels around a convolution (fbgemm's channels-last max-pool and requantize
loops, inductor's generated pooling code) vectorize over channels in 32-byte lanes; a channel
count that is not a multiple of 32 runs a scalar tail for every pixel. On LeNet-5 the 20-channel
max-pool alone took about a third of the int8 forward on fbgemm. Padding the conv to 32 output
channels (zero weights, zero bias) and giving its consumer zero input weights for them computes
the same function exactly (zero stays zero through ReLU and pooling, and int8 represents zero
exactly), at the cost of a little more conv work and a few more weight bytes.

Whether it pays depends on the kernels, so `align_channels` measures it: each site is kept only
when the int8 model built with it is faster (interleaved medians) than without.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.quantize.int8.graph import trace
    >>> gm = trace(nn.Sequential(nn.Conv2d(1, 20, 3), nn.MaxPool2d(2), nn.Conv2d(20, 8, 3)))
    >>> alignment_sites(gm)
    [('0', '2', False)]
    >>> x = torch.randn(2, 1, 12, 12)
    >>> before = gm(x)
    >>> pad_channels(gm, "0", "2", False, 32)
    >>> gm.get_submodule("0").out_channels, torch.allclose(gm(x), before, atol=1e-6)
    (32, True)
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from torch import fx, nn

from ...measure.latency import measured_faster
from .graph import _CONV, _set_submodule, equalizable_pairs

log = logging.getLogger(__name__)

MULTIPLE = 32  # bytes per AVX2 lane of uint8 channels (also a whole AVX-512 VNNI K-block)
MIN_CHANNELS = 16  # below this, padding to 32 at least doubles the conv: not worth a trial
KEEP_MARGIN = 0.97  # a site is kept when it makes the int8 model at least 3% faster


def alignment_sites(gm: fx.GraphModule, multiple: int = MULTIPLE) -> list[tuple[str, str, bool]]:
    """`(conv, consumer, through_flatten)` pairs whose conv output channels could be padded exactly.

    The conv (groups 1) must feed one weighted layer (groups 1) through zero-preserving ops only
    (ReLU, pooling, dropout, identity, optionally a flatten), each used once, so the extra channels
    reach nothing else; its channel count must not be a multiple of `multiple` and be at least
    `MIN_CHANNELS`.
    """
    sites = []
    for first, second, flat in equalizable_pairs(gm):
        conv = gm.get_submodule(first)
        if not isinstance(conv, _CONV) or isinstance(conv, nn.modules.conv._ConvTransposeNd):
            continue
        c = conv.out_channels
        if c % multiple and c >= MIN_CHANNELS:
            sites.append((first, second, flat))
    return sites


@torch.no_grad()
def pad_channels(gm: fx.GraphModule, first: str, second: str, through_flatten: bool, channels: int) -> None:
    """Give conv `first` `channels` output channels (zero filters, zero bias) and `second` matching
    zero input weights. Exact; changes `gm` in place.
    """
    conv, consumer = gm.get_submodule(first), gm.get_submodule(second)
    c = conv.out_channels
    if channels <= c:
        return
    w = conv.weight
    new_w = torch.zeros((channels, *w.shape[1:]), dtype=w.dtype)
    new_w[:c] = w
    conv = copy.deepcopy(conv)
    conv.weight = nn.Parameter(new_w)
    if conv.bias is not None:
        conv.bias = nn.Parameter(torch.cat([conv.bias, conv.bias.new_zeros(channels - c)]))
    conv.out_channels = channels
    _set_submodule(gm, first, conv)

    consumer = copy.deepcopy(consumer)
    w2 = consumer.weight
    if through_flatten:  # flatten of (C, *spatial) is channel-major: the new channels come last
        per_channel = w2.shape[1] // c
        new_w2 = torch.zeros((w2.shape[0], channels * per_channel), dtype=w2.dtype)
        new_w2[:, : c * per_channel] = w2
        consumer.in_features = channels * per_channel
    else:
        new_w2 = torch.zeros((w2.shape[0], channels, *w2.shape[2:]), dtype=w2.dtype)
        new_w2[:, :c] = w2
        consumer.in_channels = channels
    consumer.weight = nn.Parameter(new_w2)
    _set_submodule(gm, second, consumer)
    gm.recompile()


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def align_channels(gm: fx.GraphModule, build: Callable[[fx.GraphModule], nn.Module], batch: tuple, *,
                   threads: int | None = None, multiple: int = MULTIPLE,
                   measure: bool = True) -> tuple[fx.GraphModule, dict[str, str]]:
    """Pad each alignment site whose int8 build measures faster; returns (float graph, record).

    `build(float_graph)` makes the int8 model the caller would ship. Sites are tried one at a time
    on top of those already kept; each trial times the current best and the trial interleaved
    (medians, `threads` threads, on `batch`). With `measure=False` every site is padded untimed.
    The record maps each conv to what happened, e.g. ``"20 -> 32 channels: kept (0.84 ms vs 1.10 ms)"``.
    """
    sites = alignment_sites(gm, multiple)
    record: dict[str, str] = {}
    if not sites:
        return gm, record
    threads = threads or torch.get_num_threads()
    best, best_q = gm, build(gm) if measure else None
    for first, second, flat in sites:
        c = best.get_submodule(first).out_channels
        target = _round_up(c, multiple)
        trial = copy.deepcopy(best)
        pad_channels(trial, first, second, flat, target)
        what = f"{c} -> {target} channels"
        if not measure:
            best, record[first] = trial, f"{what}: applied"
            continue
        try:
            trial_q = build(trial)
        except Exception as exc:  # noqa: BLE001 - an alignment the backend cannot build is skipped
            record[first] = f"{what}: build failed ({type(exc).__name__})"
            continue
        keep, trial_ms, base_ms = measured_faster(lambda t=trial_q: t(*batch), lambda b=best_q: b(*batch),
                                                  threads, margin=KEEP_MARGIN)
        record[first] = (f"{what}: {'kept' if keep else 'rejected'} "
                         f"({trial_ms:.3f} ms vs {base_ms:.3f} ms int8, {threads} threads)")
        log.info("channel alignment of %s: %s", first, record[first])
        if keep:
            best, best_q = trial, trial_q
    return best, record
