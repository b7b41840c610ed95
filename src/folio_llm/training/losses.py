"""The training loss: cross-entropy on the answer tokens, computed the cheap way.

Three things make it cheap on a CPU, each measured (benchmarks/RESULTS.md, issue #13):

- No padding mask: rows are right-padded (``data.collate``), so the causal mask alone keeps real
  tokens from seeing pads and attention takes its faster causal path.
- The output head runs on the answer positions only, a chunk of rows at a time: the
  49k-vocabulary logits and their fp32 log-probabilities exist for one chunk at once, never for
  the whole batch, and the prompt positions (most of each row) never reach the head.
- No KV cache is built during training (``use_cache=False``).

``AnswerLoss`` wraps the peft model in a module whose forward returns the loss, so a
distributed run (DDP) sees one forward per step, as it requires.
"""

from __future__ import annotations

import torch

from folio_llm.training.data import IGNORE

HEAD_CHUNK = 512  # answer positions through the output head at once


class AnswerLoss(torch.nn.Module):
    def __init__(self, model, head_chunk: int = HEAD_CHUNK):
        super().__init__()
        self.model = model
        self.head_chunk = head_chunk

    @property
    def causal_lm(self):
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor,
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed loss over the answer tokens, each times its weight where ``weights`` is
        given, and the count of answer tokens)."""
        causal_lm = self.causal_lm
        hidden = causal_lm.get_decoder()(input_ids=input_ids, use_cache=False).last_hidden_state
        targets = labels[:, 1:]
        answer = targets != IGNORE
        hidden, targets = hidden[:, :-1][answer], targets[answer]
        if weights is not None:
            weights = weights[:, 1:][answer]
        head = causal_lm.get_output_embeddings()
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, targets.shape[0], self.head_chunk):
            chunk = slice(start, start + self.head_chunk)
            logits = head(hidden[chunk]).float()
            if weights is None:
                total = total + torch.nn.functional.cross_entropy(logits, targets[chunk], reduction="sum")
            else:
                losses = torch.nn.functional.cross_entropy(logits, targets[chunk], reduction="none")
                total = total + (losses * weights[chunk]).sum()
        return total, answer.sum()


def mean_answer_loss(loss_model: AnswerLoss, batch: dict) -> torch.Tensor:
    """Cross-entropy of one collated batch, summed with the batch's weights (if any) and divided
    by its answer tokens: a lower weight takes a token's gradient away without giving it to the
    others."""
    total, count = loss_model(batch["input_ids"], batch["labels"], batch.get("weights"))
    return total / count.clamp(min=1)


def skip_lora_input_casts(model) -> int:
    """peft casts each LoRA layer's input to the adapter's fp32 before its matmuls; under
    bf16 autocast that matmul runs in bf16 anyway, so the cast (and its backward) is a
    round trip that changes nothing but costs a measurable share of a CPU step (benchmarks/RESULTS.md). Returns the layers changed."""
    changed = 0
    for module in model.modules():
        if getattr(module, "cast_input_dtype_enabled", False):
            module.cast_input_dtype_enabled = False
            changed += 1
    return changed
