"""Pure KD losses (docs/methods/02-pretraining.md §2): logit KD, hidden-state MSE, MiniLMv2 attention relations."""

import math

import pytest
import torch
import torch.nn.functional as F

from bortify.pretraining.losses import (
    IGNORE_INDEX,
    attention_relation_kd_loss,
    default_relation_heads,
    hidden_mse_loss,
    kd_kl_divergence,
    logit_kd_loss,
    masked_cross_entropy,
    scale_to_global_tokens,
)


def _logits(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


def test_kl_is_zero_for_identical_logits_and_positive_otherwise():
    z = _logits(7, 50)
    assert kd_kl_divergence(z, z.clone(), temperature=2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_kl_divergence(z, _logits(7, 50, seed=1), temperature=2.0).item() > 0.1


def test_kl_matches_torch_reference_with_t_squared_scaling():
    s, t = _logits(5, 40), _logits(5, 40, seed=3)
    for temp in (1.0, 2.0, 4.0):
        ref = F.kl_div(F.log_softmax(s / temp, -1), F.log_softmax(t / temp, -1), log_target=True,
                       reduction="batchmean") * temp**2
        assert kd_kl_divergence(s, t, temp).item() == pytest.approx(ref.item(), rel=1e-5)
    # T² scaling: with logits scaled by T, the KL at temperature T is exactly T² times the KL at T=1.
    base = kd_kl_divergence(s, t, 1.0).item()
    assert kd_kl_divergence(3 * s, 3 * t, 3.0).item() == pytest.approx(9 * base, rel=1e-5)


def test_logit_kd_loss_combines_weights_and_matches_cross_entropy():
    s, t = _logits(2, 6, 30), _logits(2, 6, 30, seed=5)
    labels = torch.full((2, 6), -100)
    labels[0, 1], labels[1, 4], labels[1, 5] = 3, 7, 11
    out = logit_kd_loss(s, t, labels, temperature=2.0, w_mlm=0.1, w_kd=0.5)
    keep = labels != -100
    ce = F.cross_entropy(s[keep], labels[keep])
    assert out.mlm.item() == pytest.approx(ce.item(), rel=1e-6)
    assert out.kd.item() == pytest.approx(kd_kl_divergence(s[keep], t[keep], 2.0).item(), rel=1e-6)
    assert out.loss.item() == pytest.approx(0.1 * out.mlm.item() + 0.5 * out.kd.item(), rel=1e-6)


def test_unmasked_positions_are_ignored():
    s, t = _logits(2, 6, 30), _logits(2, 6, 30, seed=5)
    labels = torch.full((2, 6), -100)
    labels[0, 0], labels[1, 3] = 1, 2
    before = logit_kd_loss(s, t, labels).loss
    s2, t2 = s.clone(), t.clone()
    s2[labels == -100] = 1e3 * torch.randn_like(s2[labels == -100])  # garbage at unmasked positions
    t2[labels == -100] = -7.0
    assert logit_kd_loss(s2, t2, labels).loss.item() == pytest.approx(before.item(), rel=1e-6)


def test_gradient_reaches_student_only_and_nothing_masked_gives_zero():
    s = _logits(1, 4, 20).requires_grad_(True)
    t = _logits(1, 4, 20, seed=2).requires_grad_(True)
    labels = torch.tensor([[-100, 5, -100, 9]])
    logit_kd_loss(s, t, labels).loss.backward()
    assert s.grad is not None and s.grad[0, 1].abs().sum() > 0 and s.grad[0, 0].abs().sum() == 0
    assert t.grad is None  # the teacher's logits are detached
    none = logit_kd_loss(s, t, torch.full((1, 4), -100))
    assert none.loss.item() == 0.0


def test_bort_quirk_is_much_weaker_than_textbook_kd():
    s, t = _logits(8, 1000), _logits(8, 1000, seed=9)
    textbook = kd_kl_divergence(s, t, 2.0, "textbook").item()
    quirk = kd_kl_divergence(s, t, 2.0, "bort_quirk").item()
    assert 0 <= quirk < textbook / 100


def test_vocabulary_mismatch_is_an_error():
    with pytest.raises(ValueError, match="vocabulary"):
        logit_kd_loss(_logits(3, 10), _logits(3, 12), torch.tensor([1, 2, 3]))


def test_hidden_mse_with_projection_and_padding():
    h_s, h_t = torch.randn(2, 5, 8), torch.randn(2, 5, 16)
    proj = torch.nn.Linear(8, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    loss = hidden_mse_loss([h_s], [h_t], [proj], mask)
    diff = (proj(h_s) - h_t).pow(2).mean(-1)
    assert loss.item() == pytest.approx(((diff * mask).sum() / mask.sum()).item(), rel=1e-5)
    # padded positions do not count
    h_t2 = h_t.clone()
    h_t2[0, 3:] = 100.0
    assert hidden_mse_loss([h_s], [h_t2], [proj], mask).item() == pytest.approx(loss.item(), rel=1e-5)
    assert hidden_mse_loss([h_t], [h_t.clone()]).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="projection"):
        hidden_mse_loss([h_s], [h_t])
    loss.backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0


def test_attention_relation_kd_across_different_head_counts():
    torch.manual_seed(0)
    # student: width 32 (e.g. 2 heads of 16); teacher: width 384 (12 heads of 32): relations over 4 heads.
    s_qkv = [torch.randn(2, 6, 32, requires_grad=True) for _ in range(3)]
    t_qkv = [torch.randn(2, 6, 384) for _ in range(3)]
    loss = attention_relation_kd_loss(s_qkv, t_qkv, num_relation_heads=4)
    assert loss.item() > 0
    loss.backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s_qkv)
    same = [x.detach() for x in s_qkv]
    assert attention_relation_kd_loss(same, [x.clone() for x in same], 4).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        attention_relation_kd_loss(s_qkv, t_qkv, num_relation_heads=5)


def test_attention_relation_matches_explicit_minilmv2_formula():
    torch.manual_seed(1)
    q_s, q_t = torch.randn(1, 4, 6), torch.randn(1, 4, 12)
    loss = attention_relation_kd_loss([q_s], [q_t], num_relation_heads=2)
    expected = 0.0
    for r in range(2):
        a = q_s[0, :, r * 3:(r + 1) * 3]
        b = q_t[0, :, r * 6:(r + 1) * 6]
        rel_s = torch.softmax(a @ a.T / math.sqrt(3), -1)
        rel_t = torch.softmax(b @ b.T / math.sqrt(6), -1)
        expected += (rel_t * (rel_t.log() - rel_s.log())).sum(-1).mean() / 2
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)


def test_attention_relation_ignores_padded_keys_and_queries():
    torch.manual_seed(2)
    x_s, x_t = torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    base = attention_relation_kd_loss([x_s], [x_t], 2, mask)
    x_t2 = x_t.clone()
    x_t2[0, 3:] = 50.0
    assert attention_relation_kd_loss([x_s], [x_t2], 2, mask).item() == pytest.approx(base.item(), rel=1e-5)


def test_relation_heads():
    assert default_relation_heads(256, 384, 12) == 8
    assert default_relation_heads(384, 384, 12) == 12
    assert default_relation_heads(32, 384, 12) == 8


def test_masked_cross_entropy_counts_labelled_positions_only():
    logits = _logits(2, 5, 30)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 1], labels[1, 3], labels[1, 4] = 4, 7, 29
    keep = labels != IGNORE_INDEX
    per_token = F.cross_entropy(logits[keep], labels[keep], reduction="none")
    assert masked_cross_entropy(logits, labels).item() == pytest.approx(per_token.mean().item(), rel=1e-6)
    assert masked_cross_entropy(logits, labels, reduction="sum").item() == pytest.approx(per_token.sum().item(), rel=1e-6)
    assert torch.allclose(masked_cross_entropy(logits, labels, reduction="none"), per_token)
    # gathered form (N, V) / (N,) gives the same; changing an unlabelled position's logits changes nothing
    assert masked_cross_entropy(logits[keep], labels[keep]).item() == pytest.approx(per_token.mean().item(), rel=1e-6)
    other = logits.clone()
    other[0, 0] += 100.0
    assert masked_cross_entropy(other, labels).item() == pytest.approx(per_token.mean().item(), rel=1e-6)
    # bf16 logits are scored in float32
    assert masked_cross_entropy(logits.bfloat16(), labels).dtype == torch.float32


def test_masked_cross_entropy_of_nothing_is_a_differentiable_zero():
    logits = _logits(1, 4, 10).requires_grad_(True)
    loss = masked_cross_entropy(logits, torch.full((1, 4), IGNORE_INDEX))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) == 0.0
    assert masked_cross_entropy(logits, torch.full((1, 4), IGNORE_INDEX), reduction="none").numel() == 0
    with pytest.raises(ValueError, match="reduction"):
        masked_cross_entropy(logits, torch.zeros(1, 4, dtype=torch.long), reduction="max")


def test_logit_kd_mlm_part_is_the_masked_cross_entropy():
    s, t = _logits(3, 6, 20), _logits(3, 6, 20, seed=5)
    labels = torch.randint(0, 20, (3, 6), generator=torch.Generator().manual_seed(1))
    labels[:, ::2] = IGNORE_INDEX
    assert logit_kd_loss(s, t, labels).mlm.item() == pytest.approx(masked_cross_entropy(s, labels).item(), rel=1e-6)


def test_global_token_scaling_turns_micro_batch_means_into_the_step_mean():
    """Two micro-batches (or ranks) with 3 and 1 labelled tokens: their scaled means sum to the 4-token mean."""
    per_token = torch.tensor([1.0, 2.0, 3.0, 10.0])
    a, b = per_token[:3].mean(), per_token[3:].mean()
    step = scale_to_global_tokens(a, 3, 4) + scale_to_global_tokens(b, 1, 4)
    assert step.item() == pytest.approx(per_token.mean().item())
    assert (a + b).item() / 2 != pytest.approx(per_token.mean().item())  # the naive mean of means differs
    # DDP averages gradients over processes: each rank's share is multiplied back by the world size
    assert scale_to_global_tokens(a, 3, 4, num_processes=2).item() == pytest.approx(2 * 0.75 * a.item())
