"""The BERT baseline of the paper's BiGS-vs-BERT comparison, with BiGS's masked-only MLM head.

`BertForMaskedLM` computes the MLM head (H×H transform + H×V decoder) at every position; BiGS
runs it only at the masked ones (bigs/model.py, REFERENCE.md §4). For a fair speed comparison
on the same data, this subclass does the same when labels are given: same loss and gradients,
same weights and checkpoint layout (a plain `BertForMaskedLM` loads what it saves).

    from bigs.bert import BertForMaskedLMMaskedHead
    out = model(input_ids, attention_mask, labels=labels)                  # labels (B, L), -100 = ignore
    out = model(input_ids, attention_mask, labels=ids_bp, masked_positions=pos_bp)  # fixed shapes (XLA)
"""

from __future__ import annotations

import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM
from transformers.modeling_outputs import MaskedLMOutput


def bert_config(hidden_size: int, n_layers: int, intermediate_size: int, dropout: float, max_len: int) -> BertConfig:
    """The baseline at the sizes of a BiGS run: a head per 64 channels (BERT's), the same vocab,
    at least BERT's 512 positions, PyTorch's fused attention (SDPA)."""
    return BertConfig(
        vocab_size=30522,
        hidden_size=hidden_size,
        num_hidden_layers=n_layers,
        num_attention_heads=max(1, hidden_size // 64),
        intermediate_size=intermediate_size,
        hidden_dropout_prob=dropout,
        max_position_embeddings=max(512, max_len),
        attn_implementation="sdpa",
    )


class BertForMaskedLMMaskedHead(BertForMaskedLM):
    def forward(
        self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, masked_positions=None, **kwargs
    ):
        if labels is None:  # no labels: the usual full head (pipelines, evaluation)
            return super().forward(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs
            )
        h = self.bert(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state  # (B L H)
        if masked_positions is not None:  # (B P): gather exactly P rows per sequence, no dynamic shapes
            idx = masked_positions.long().unsqueeze(-1).expand(-1, -1, h.shape[-1])  # (B P H)
            logits = self.cls(h.gather(1, idx))  # (B P V)
        else:
            selected = labels != -100  # (B L)
            logits, labels = self.cls(h[selected]), labels[selected]  # (n V), (n,)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits)

    def flops_per_token(self, seq_len: int, mlm_fraction: float | None = None, training: bool = True) -> float:
        """Model FLOPs per token position (as BiGSConfig.flops_per_token): per layer the Q, K, V, O
        projections (4 H²), the MLP (2 H I) and attention's QKᵀ and AV (2 L H); the MLM head at a
        fraction of the positions (None = all). training: forward + backward = 3 × forward."""
        c = self.config
        H, I, L, V = c.hidden_size, c.intermediate_size, seq_len, c.vocab_size
        layer = 2 * (4 * H * H + 2 * H * I) + 2 * 2 * L * H
        head = 2 * (H * H + H * V) * (1.0 if mlm_fraction is None else mlm_fraction)
        forward = c.num_hidden_layers * layer + head
        return 3 * forward if training else forward
