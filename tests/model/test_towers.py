import pytest
import torch

from model.config import ModelConfig
from model.towers import (
    ContextLayer,
    ItemTower,
    OnlineTower,
    SequenceEncoder,
    gap_buckets,
    hash_buckets,
    interest_rows,
)
from towerline.core.contracts import PAD_INTEREST, UNKNOWN_INTEREST

CFG = ModelConfig(
    pin_buckets=64, interest_vocab=12, dim=16, d_model=16, heads=2, layers=1, ff=32,
    max_len=8, realtime_len=4, context_dim=8, head_hidden=32,
)  # fmt: skip


def _encoder_inputs(b=3, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "pin_ids": torch.randint(1, 10**9, (b, w), generator=g),
        "interest_ids": torch.randint(-1, 9, (b, w, 3), generator=g),
        "interest_conf": torch.rand(b, w, 3, generator=g),
        "actions": torch.randint(0, 5, (b, w), generator=g),
        "log_gaps": torch.rand(b, w, generator=g),
        "lengths": torch.tensor([w, 2, 0])[:b],
    }


def _context(b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "subject_interest_ids": torch.randint(0, 9, (b, 3), generator=g),
        "subject_interest_conf": torch.rand(b, 3, generator=g) + 0.1,
        "demographics": torch.randint(0, 4, (b, 4), generator=g),
        "realtime_pin_ids": torch.randint(1, 10**6, (b, 4), generator=g),
        "realtime_mask": torch.rand(b, 4, generator=g) > 0.3,
        "since_last_s": torch.randint(-1, 10**7, (b,), generator=g),
    }


def test_hashing_and_interest_rows_stay_in_range():
    ids = torch.tensor([0, 1, 2**62, -5, 123456789012])
    for which in (0, 1):
        rows = hash_buckets(ids, 64, which)
        assert rows.min() >= 0 and rows.max() < 64
    assert not torch.equal(hash_buckets(ids, 64, 0), hash_buckets(ids, 64, 1))
    raw = torch.tensor([PAD_INTEREST, UNKNOWN_INTEREST, 0, 9, 10, 500])
    assert interest_rows(raw, 12).tolist() == [0, 1, 2, 11, 1, 1]


def test_encoder_is_causal_and_ignores_padding():
    encoder = SequenceEncoder(CFG).eval()
    inputs = _encoder_inputs()
    with torch.no_grad():
        state = encoder(**inputs)
        changed = {k: v.clone() for k, v in inputs.items()}
        changed["pin_ids"][:, 2:] += 7  # after row 1's last event (length 2)
        state2 = encoder(**changed)
        hidden = encoder.sequence(**inputs)
    assert state.shape == (3, CFG.d_model)
    assert torch.allclose(state[1], state2[1], atol=1e-6)  # later / padded events unseen
    assert not torch.allclose(state[0], state2[0])
    assert torch.allclose(state[2], encoder.empty)  # no history -> the empty state
    assert torch.allclose(state[0], hidden[0, -1], atol=1e-6)


@pytest.mark.parametrize("residual", [False, True])
def test_towers_give_unit_vectors_of_the_same_dimension(residual: bool):
    cfg = ModelConfig(**{**CFG.to_json(), "residual_heads": residual})
    online, items = OnlineTower(cfg).eval(), ItemTower(cfg).eval()
    # The residual path adds parameters only where it is on (old versions load unchanged).
    assert any("skip" in k for k in online.state_dict()) == residual
    with torch.no_grad():
        user = online(torch.randn(3, CFG.d_model), **_context())
        item = items(torch.tensor([1, 2, 3]), torch.randint(-1, 9, (3, 3)), torch.rand(3, 3))
    assert user.shape == item.shape == (3, CFG.dim)
    assert torch.allclose(user.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(item.norm(dim=1), torch.ones(3), atol=1e-5)


def test_pseudo_context_dropout_is_active_in_training_and_off_at_inference():
    cfg = ModelConfig(**{**CFG.to_json(), "context_dropout": 0.5, "id_dropout": 0.0})
    layer = ContextLayer(cfg)
    ctx = _context(b=4000)
    torch.manual_seed(0)
    trained = layer.train()(**ctx)
    dropped = trained.abs().sum(1) == 0
    assert 0.45 < dropped.float().mean() < 0.55  # whole context vectors, about half
    with torch.no_grad():
        inference = layer.eval()(**ctx)
    assert (inference.abs().sum(1) > 0).all()  # never dropped at inference
    assert torch.allclose(trained[~dropped], inference[~dropped], atol=1e-6)  # not rescaled
    online = OnlineTower(cfg).eval()
    state = torch.randn(3, cfg.d_model)
    zero = torch.zeros(3, 3 * cfg.context_dim)
    with torch.no_grad():  # "no context" = the dropped (zero) vector
        assert torch.allclose(online.without_context(state), online.head(state, zero))


def test_request_gap_buckets_are_log2_seconds_with_one_for_no_state():
    seconds = torch.tensor([-1, 0, 1, 2, 3, 59, 60, 3600, 86_400, 2**40])
    assert gap_buckets(seconds).tolist() == [32, 0, 1, 1, 2, 5, 5, 11, 16, 31]


def test_the_request_gap_moves_the_user_embedding_only_where_the_config_has_it():
    state = torch.randn(3, CFG.d_model)
    ctx = _context()
    later = {**ctx, "since_last_s": ctx["since_last_s"].clamp(min=0) + 10**6}
    with_gap = ModelConfig(**{**CFG.to_json(), "request_gap": True})
    with torch.no_grad():
        on = OnlineTower(with_gap).eval()
        assert not torch.allclose(on(state, **ctx), on(state, **later))
        off = OnlineTower(ModelConfig(**{**CFG.to_json(), "request_gap": False})).eval()
        assert torch.equal(off(state, **ctx), off(state, **later))
    assert [k for k in on.state_dict() if k not in off.state_dict()] == ["context.gap.weight"]
    # A version saved before the gap existed has no table for it, and loads as such.
    saved = {k: v for k, v in with_gap.to_json().items() if k != "request_gap"}
    assert ModelConfig.from_json(saved).request_gap is False
    assert ModelConfig.from_json(with_gap.to_json()).request_gap is True
