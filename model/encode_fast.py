"""Inference-only twin of ``SequenceEncoder.forward`` for the batch encode job.

Same weights, same result within float tolerance (``tests/batch/test_encode.py``),
less work. ``forward`` runs every layer at every position and then keeps one state per
row; with causal attention and norm-first layers, the state after a row's last event
needs:

- the input embeddings and every layer but the last at all positions <= the last event
  (the keys and values the last layer attends to);
- of the last layer: keys and values at every position, but the query, the attention
  output, the feed-forward block and ``norm_out`` at the last event only.

The feed-forward block is about half of a layer's FLOPs, so the last layer shrinks to
its K/V projections. Attention goes through ``F.scaled_dot_product_attention`` with
``is_causal=True`` instead of the float mask ``forward`` builds: the fused path of
``nn.TransformerEncoderLayer`` spent ~16% of the job in ``_masked_softmax`` with that
mask (torch.profiler, ``bench/encode.py``'s raw loop). The two embedding tables are
read with ``embedding_bag`` and the linear layers skip ``addmm``'s bias copy (see
``pin_vectors`` and ``_linear``).

Measured on random batches shaped like the bench's world (lengths ~ Poisson(50 x
lognormal), L 50, batch 256, one thread; CPU time, the machine being shared): forward
2,500-3,000 users per CPU second, this path 4,800-6,000; the fast path's own profile is
then GEMMs ~30%, attention ~13%, GELU ~11%, layer norms ~8%, embeddings ~6%.

Only the training-free shape of the layers is supported (norm-first, GELU, eval);
``encode_states`` falls back to the encoder's own ``forward`` for anything else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.towers import SequenceEncoder, hash_buckets, interest_rows


def supports_fast_path(encoder: SequenceEncoder) -> bool:
    """Whether ``encode_states`` can skip work for this encoder (else it calls forward)."""
    layers = list(encoder.layers.layers)
    return (
        not encoder.training
        and encoder.layers.norm is None
        and all(_plain_layer(layer) for layer in layers)
        and len(layers) >= 1
    )


def _plain_layer(layer: nn.Module) -> bool:
    return (
        isinstance(layer, nn.TransformerEncoderLayer)
        and layer.norm_first
        and layer.activation is F.gelu
        and layer.self_attn.batch_first
        and layer.self_attn._qkv_same_embed_dim
        and layer.self_attn.in_proj_bias is not None
    )


@torch.inference_mode()
def pin_vectors(
    encoder: SequenceEncoder, pin_ids: Tensor, interest_ids: Tensor, interest_conf: Tensor
) -> Tensor:
    """The part of an event's input embedding that depends on its pin alone, as
    ``SequenceEncoder.sequence`` sums it: (*S) ids, (*S, 3) interests -> (*S, d_model)."""
    # embedding_bag gathers and sums in one pass: ``HashedIdEmbedding`` and
    # ``InterestPool`` materialise (*S, 2, d) and (*S, 3, d) first (~15% of the job).
    shape = pin_ids.shape
    hashed = encoder.pin
    buckets = torch.stack(
        [hash_buckets(pin_ids, hashed.buckets, 0), hash_buckets(pin_ids, hashed.buckets, 1)], -1
    )
    pins = F.embedding_bag(buckets.reshape(-1, 2), hashed.table.weight, mode="sum")
    pool = encoder.interests
    rows = interest_rows(interest_ids, pool.vocab).reshape(-1, interest_ids.shape[-1])
    weights = interest_conf.reshape(rows.shape).to(pool.table.weight.dtype)
    interests = F.embedding_bag(rows, pool.table.weight, per_sample_weights=weights, mode="sum")
    return (pins + interests).reshape(*shape, -1)


@torch.inference_mode()
def encode_states(
    encoder: SequenceEncoder,
    pin_ids: Tensor,
    interest_ids: Tensor,
    interest_conf: Tensor,
    actions: Tensor,
    log_gaps: Tensor,
    lengths: Tensor,
) -> Tensor:
    """Same arguments and result as ``SequenceEncoder.forward``: (B, d_model) state after
    each row's last event, the learned empty state where ``lengths`` is 0."""
    if not supports_fast_path(encoder):
        return encoder(pin_ids, interest_ids, interest_conf, actions, log_gaps, lengths)
    pins = pin_vectors(encoder, pin_ids, interest_ids, interest_conf)
    return encode_from_pin_vectors(encoder, pins, actions, log_gaps, lengths)


@torch.inference_mode()
def encode_from_pin_vectors(
    encoder: SequenceEncoder, pins: Tensor, actions: Tensor, log_gaps: Tensor, lengths: Tensor
) -> Tensor:
    """``encode_states`` with the pin part of the inputs already embedded: (B, W, d)
    ``pin_vectors``, (B, W) actions and gaps, (B,) lengths -> (B, d_model)."""
    if not supports_fast_path(encoder):
        raise ValueError("this encoder needs SequenceEncoder.forward (see supports_fast_path)")
    width = pins.shape[1]
    x = pins + encoder.action(actions) + encoder.gap(log_gaps.unsqueeze(-1))
    x = encoder.norm_in(x + encoder.position.weight[:width])
    *inner, final = encoder.layers.layers
    for layer in inner:
        x = _causal_layer(layer, x)
    last = (lengths - 1).clamp(min=0)
    state = encoder.norm_out(_last_position_layer(final, x, last))
    return torch.where((lengths > 0).unsqueeze(-1), state, encoder.empty)


def _split_heads(t: Tensor, heads: int) -> Tensor:
    """(B, W, d) -> (B, heads, W, d / heads)."""
    b, w, d = t.shape
    return t.view(b, w, heads, d // heads).transpose(1, 2)


def _linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``F.linear`` as a matmul plus an in-place bias add: on CPU ``addmm`` first copies
    the broadcast bias into its output, which cost as much as the (B*W, 64) x (64, 256)
    product itself here (torch.profiler: ``aten::copy_`` 13-21% of the job)."""
    return torch.matmul(x, weight.t()).add_(bias)


def _feed_forward(layer: nn.TransformerEncoderLayer, x: Tensor) -> Tensor:
    hidden = F.gelu(_linear(layer.norm2(x), layer.linear1.weight, layer.linear1.bias))
    return x + _linear(hidden, layer.linear2.weight, layer.linear2.bias)


def _causal_layer(layer: nn.TransformerEncoderLayer, x: Tensor) -> Tensor:
    """One norm-first layer at every position (B, W, d) -> (B, W, d)."""
    attn = layer.self_attn
    heads = attn.num_heads
    q, k, v = _linear(layer.norm1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)
    out = F.scaled_dot_product_attention(
        _split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads), is_causal=True
    )
    out = out.transpose(1, 2).reshape(x.shape)
    x = x + _linear(out, attn.out_proj.weight, attn.out_proj.bias)
    return _feed_forward(layer, x)


def _last_position_layer(layer: nn.TransformerEncoderLayer, x: Tensor, last: Tensor) -> Tensor:
    """One norm-first layer, output only at position ``last`` (B,) of each row: (B, d).

    Keys and values at every position (the query attends to positions <= last), the
    query and everything after attention at ``last`` only."""
    attn = layer.self_attn
    batch, width, d = x.shape
    heads, head_dim = attn.num_heads, d // attn.num_heads
    w_q, w_kv = attn.in_proj_weight[:d], attn.in_proj_weight[d:]
    b_q, b_kv = attn.in_proj_bias[:d], attn.in_proj_bias[d:]
    rows = torch.arange(batch)
    k, v = _linear(layer.norm1(x), w_kv, b_kv).chunk(2, -1)  # (B, W, d) each
    here = x[rows, last]  # (B, d): the residual stream at the last event
    q = _linear(layer.norm1(here), w_q, b_q).view(batch, heads, 1, head_dim)
    future = torch.arange(width)[None, :] > last[:, None]  # (B, W) keys after the query
    mask = torch.zeros(batch, 1, 1, width, dtype=x.dtype).masked_fill(
        future[:, None, None, :], float("-inf")
    )
    out = F.scaled_dot_product_attention(q, _split_heads(k, heads), _split_heads(v, heads), mask)
    here = here + _linear(out.reshape(batch, d), attn.out_proj.weight, attn.out_proj.bias)
    return _feed_forward(layer, here)
