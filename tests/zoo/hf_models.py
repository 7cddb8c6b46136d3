"""Tiny Hugging Face transformers architectures built from configs (random weights, no download).

Each entry: name -> (builder, example_inputs). Configs are kept tiny so a prune runs in ~1 s.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logging.getLogger("transformers").setLevel(logging.ERROR)


class HFWrap(nn.Module):
    """Return the first output tensor (``last_hidden_state`` / ``logits``) of a HF model."""

    def __init__(self, model: nn.Module, key: str | None = None):
        super().__init__()
        self.model = model
        self.key = key

    def forward(self, *args):
        out = self.model(*args)
        if self.key:
            return out[self.key]
        return out[0]


def _img(n=1, s=32):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n, 3, s, s, generator=g),)


def _ids(n=2, length=8, vocab=100):
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, vocab, (n, length), generator=g),)


def resnet():
    from transformers import ResNetConfig, ResNetModel

    cfg = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 32, 64], depths=[1, 1, 1, 1], layer_type="bottleneck")
    return HFWrap(ResNetModel(cfg), "pooler_output"), _img()


def convnext():
    from transformers import ConvNextConfig, ConvNextModel

    cfg = ConvNextConfig(hidden_sizes=[16, 32, 32, 64], depths=[1, 1, 1, 1], patch_size=2)
    return HFWrap(ConvNextModel(cfg), "pooler_output"), _img()


def mobilenet_v2():
    from transformers import MobileNetV2Config, MobileNetV2Model

    cfg = MobileNetV2Config(depth_multiplier=0.35, image_size=32)
    return HFWrap(MobileNetV2Model(cfg), "pooler_output"), _img()


def efficientnet():
    from transformers import EfficientNetConfig, EfficientNetModel

    cfg = EfficientNetConfig(width_coefficient=0.25, depth_coefficient=0.2, image_size=32, hidden_dim=320)
    return HFWrap(EfficientNetModel(cfg), "pooler_output"), _img()


def regnet():
    from transformers import RegNetConfig, RegNetModel

    cfg = RegNetConfig(embedding_size=16, hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1], groups_width=8)
    return HFWrap(RegNetModel(cfg), "pooler_output"), _img()


def vit():
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64)
    return HFWrap(ViTModel(cfg, add_pooling_layer=False), "last_hidden_state"), _img()


def swin():
    from transformers import SwinConfig, SwinModel

    cfg = SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4)
    return HFWrap(SwinModel(cfg), "pooler_output"), _img()


def bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    return HFWrap(BertModel(cfg), "last_hidden_state"), _ids()


def distilbert():
    from transformers import DistilBertConfig, DistilBertModel

    cfg = DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64)
    return HFWrap(DistilBertModel(cfg), "last_hidden_state"), _ids()


def gpt2():
    from transformers import GPT2Config, GPT2Model

    cfg = GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, use_cache=False,
                     bos_token_id=0, eos_token_id=0)
    return HFWrap(GPT2Model(cfg), "last_hidden_state"), _ids()


HF_ZOO = {
    "resnet": resnet,
    "convnext": convnext,
    "mobilenet_v2": mobilenet_v2,
    "efficientnet": efficientnet,
    "regnet": regnet,
    "vit": vit,
    "swin": swin,
    "bert": bert,
    "distilbert": distilbert,
    "gpt2": gpt2,
}
