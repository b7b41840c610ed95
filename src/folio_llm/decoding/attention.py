"""Attention for verifying drafts: grouped-query attention without copying the cache.

With grouped-query attention (SmolLM2: 9 query heads share each of 3 key/value heads)
transformers' sdpa path answers a single new token by folding the query heads onto their
key/value head, but for several new tokens it copies the whole cache three times over in every
layer (``repeat_kv``), which costs a verification step more than its drafted tokens save. Here
the same fold serves any number of new tokens: the queries of one key/value head (n_rep heads x
q tokens) attend together, each under its own token's row of the mask. One token, and a prompt, are
left to transformers' own function, so plain decoding is untouched.
"""

from __future__ import annotations

NAME = "sdpa_folded_gqa"
LONGEST_FOLDED = 16  # new tokens; a prompt's pass stays on transformers' path


def folded_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                        is_causal=None, **kwargs):
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, length, dim = query.shape
    if (groups == 1 or not 1 < length <= LONGEST_FOLDED or attention_mask is None or attention_mask.shape[1] != 1
            or kwargs.get("position_bias") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    kv_heads = heads // groups
    folded = query.reshape(batch, kv_heads, groups * length, dim)
    mask = attention_mask.repeat(1, 1, groups, 1)  # row (g, t) of a folded head takes token t's row
    output = torch.nn.functional.scaled_dot_product_attention(folded, key, value, attn_mask=mask, dropout_p=dropout,
                                                              scale=scaling)
    return output.reshape(batch, heads, length, dim).transpose(1, 2).contiguous(), None


def use_folded_attention(model) -> None:
    """Switch a loaded transformers model to :func:`folded_sdpa_forward` (masks as for sdpa)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(NAME, folded_sdpa_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
