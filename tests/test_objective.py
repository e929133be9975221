"""mtp_loss equals the naive per-region definition (design.md): loss, targets and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mtpsd.objective import mtp_loss

V, MTP, EOS = 64, 63, 2
ALLOWED = torch.tensor([i for i in range(V) if i != MTP])


def naive_regions(row: list[int], n_real: int, positions: list[int], k: int, eos):
    """Kept regions restated from method.md section 3 (independent of layout.py)."""
    e = None  # the text ends at its final EOS: the start of the trailing EOS run
    if eos is not None and row[n_real - 1] == eos:
        e = n_real - 1
        while e > 0 and row[e - 1] == eos:
            e -= 1
    kept = []
    for p in sorted(q for q in positions if q >= 0):
        if e is not None:
            if p >= e:
                break
            kept.append(p)
            if p + k >= e:
                break
        elif p + k <= n_real - 1:
            kept.append(p)
    return kept, e


def logp(logits):
    return F.log_softmax(logits[..., ALLOWED], dim=-1)


def naive_loss(student, teacher, x, positions, k, mode, attention, n_real, eos, prefix):
    terms, s_logits, targets = [], [], []
    for b in range(x.shape[0]):
        row = x[b].tolist()
        kept, e = naive_regions(row, n_real[b], positions[b].tolist(), k, eos)
        for p in kept:
            ids = torch.tensor([row[: p + 1] + [MTP] * (k - 1)])
            T = ids.shape[1]
            mask = torch.ones(T, T).tril().bool()
            if attention == "bidirectional":
                mask[p + 1:, p + 1:] = True
            s = student(input_ids=ids, attention_mask=mask[None, None]).logits[0, p:p + k]  # (k, V)
            s_lp = logp(s)
            prop = ALLOWED[s_lp.detach().argmax(-1)]
            if mode == "gt":
                tg = [row[t] if e is None or t < e else eos for t in range(p + 1, p + k + 1)]
                tg = torch.tensor(tg)
                terms.append(-s_lp.gather(-1, torch.searchsorted(ALLOWED, tg)[:, None])[:, 0])
            else:
                t_ids = torch.tensor([row[: p + 1] + prop[: k - 1].tolist()])
                with torch.no_grad():
                    t_lp = logp(teacher(input_ids=t_ids).logits[0, p:p + k])
                tg = ALLOWED[t_lp.argmax(-1)]
                if mode == "hard":
                    terms.append(-s_lp.gather(-1, t_lp.argmax(-1, keepdim=True))[:, 0])
                else:
                    terms.append(-(t_lp.exp() * s_lp).sum(-1))
            s_logits.append(s)
            targets.append(tg)
        if prefix:
            last = e if e is not None else n_real[b] - 1
            lp = logp(student(input_ids=x[b:b + 1, : last + 1]).logits[0])
            for t in range(last):
                if t not in kept:
                    terms.append(-lp[t, torch.searchsorted(ALLOWED, torch.tensor(row[t + 1]))][None])
    allt = torch.cat(terms)
    return allt.sum() / allt.numel(), torch.cat(s_logits), torch.cat(targets)


CASES = [
    # (k, mode, attention, n_regions, eos_at, pad_to, prefix)
    (2, "hard", "causal", 3, None, None, False),
    (4, "hard", "causal", 2, None, None, False),
    (3, "soft", "causal", 3, None, None, False),
    (4, "gt", "causal", 3, None, None, False),
    (3, "hard", "bidirectional", 2, None, None, False),
    (4, "soft", "bidirectional", 3, None, None, False),
    (3, "hard", "causal", 4, 11, None, False),  # EOS cuts regions
    (4, "gt", "causal", 4, 9, 14, False),  # EOS + right padding
    (3, "hard", "causal", 3, None, 15, True),  # padding + prefix loss
    (5, "gt", "bidirectional", 2, 12, None, True),
]


@pytest.mark.parametrize("k,mode,attention,n_regions,eos_at,pad_to,prefix", CASES)
def test_packed_equals_naive(tiny_llama, k, mode, attention, n_regions, eos_at, pad_to, prefix):
    student = tiny_llama(V, seed=1)
    teacher = copy.deepcopy(student)
    with torch.no_grad():  # student has moved away from the teacher
        for prm in student.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    g = torch.Generator().manual_seed(k * 7 + n_regions)
    B, N = 2, 20
    x = torch.randint(3, V - 1, (B, N), generator=g)
    n_real = [N, N]
    am = torch.ones(B, N, dtype=torch.long)
    if eos_at is not None:
        x[0, 1] = EOS  # an end-of-turn inside the text (chat template): ordinary text
        x[0, eos_at:] = EOS  # the text's EOS, then padding written with the EOS id
    if pad_to is not None:
        am[1, pad_to:] = 0
        n_real[1] = pad_to
    positions = torch.stack([torch.randperm(N - 2, generator=g)[:n_regions] for _ in range(B)])
    positions[1, -1] = -1  # unused slot
    out = mtp_loss(student, teacher, x, k=k, prediction_positions=positions, mtp_token_id=MTP,
                   teacher_mode=mode, attention=attention, attention_mask=am, prefix_loss=prefix,
                   eos_token_id=EOS if eos_at is not None else None)
    grads = torch.autograd.grad(out.loss, list(student.parameters()))
    ref_loss, ref_logits, ref_targets = naive_loss(
        student, teacher, x, positions, k, mode, attention, n_real, EOS if eos_at is not None else None, prefix)
    ref_grads = torch.autograd.grad(ref_loss, list(student.parameters()))
    assert out.student_logits.shape == ref_logits.shape and len(ref_targets) > 0
    torch.testing.assert_close(out.student_logits, ref_logits, rtol=1e-9, atol=1e-9)
    assert torch.equal(out.targets, ref_targets)
    torch.testing.assert_close(out.loss, ref_loss, rtol=1e-10, atol=1e-10)
    # sdpa's CPU backward is only ~1e-8 accurate even in float64 (it differs from eager
    # attention by that much on a plain causal forward), so gradients get a looser bound;
    # a wrong mask or target moves them by 1e-3 or more.
    for a, r in zip(grads, ref_grads):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-7)


def test_k1_step0_self_agreement(tiny_llama):
    student = tiny_llama(V, seed=2)
    teacher = copy.deepcopy(student)
    x = torch.randint(3, V - 1, (3, 24), generator=torch.Generator().manual_seed(0))
    pos = torch.tensor([[0, 5, 9, 20], [1, 2, 3, 4], [22, 10, -1, -1]])
    out = mtp_loss(student, teacher, x, k=1, prediction_positions=pos, mtp_token_id=MTP, teacher_mode="soft")
    assert out.agreement.all() and len(out.targets) == 10
    assert out.kl.abs().max() < 1e-12
    # soft CE equals the entropy, not zero
    torch.testing.assert_close(out.loss, out.student_entropy.mean())
    assert out.loss > 0.1


def test_banned_never_target(tiny_llama):
    student = tiny_llama(V, seed=3)
    with torch.no_grad():  # make <MTP> the favourite output everywhere
        student.lm_head.weight[MTP] = 0
        student.lm_head.bias = None
        student.model.norm.weight.fill_(1.0)
    x = torch.randint(3, V - 1, (2, 16), generator=torch.Generator().manual_seed(1))
    pos = torch.tensor([[2, 8], [4, 10]])
    for mode in ("hard", "soft"):
        out = mtp_loss(student, copy.deepcopy(student), x, k=3, prediction_positions=pos,
                       mtp_token_id=MTP, teacher_mode=mode)
        assert (out.targets != MTP).all() and (out.student_argmax != MTP).all()
        assert torch.isfinite(out.loss)


def test_gt_mode_needs_no_teacher_and_bad_mode_fails(tiny_llama):
    from mtpsd.errors import MtpsdError

    student = tiny_llama(V)
    x = torch.randint(3, V - 1, (1, 12))
    pos = torch.tensor([[3]])
    out = mtp_loss(student, None, x, k=3, prediction_positions=pos, mtp_token_id=MTP, teacher_mode="gt")
    assert out.targets.tolist() == x[0, 4:7].tolist()
    with pytest.raises(MtpsdError, match="teacher_mode"):
        mtp_loss(student, student, x, k=3, prediction_positions=pos, mtp_token_id=MTP, teacher_mode="kl")
    with pytest.raises(MtpsdError, match="needs a teacher"):
        mtp_loss(student, None, x, k=3, prediction_positions=pos, mtp_token_id=MTP)


@pytest.mark.parametrize("mode,attention", [("gt", "causal"), ("hard", "causal"), ("soft", "bidirectional")])
def test_sampled_end_of_text_regions_equal_naive(tiny_llama, mode, attention):
    """Regions as training samples them (mtpsd.layout.sample_batch_layout with each row's end):
    on texts that end at EOS the sampler places regions whose targets run past the EOS; the
    packed loss equals the naive per-region definition, whose missing targets are EOS."""
    from mtpsd.layout import batch_ends, sample_batch_layout

    student = tiny_llama(V, seed=2)
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for prm in student.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    g = torch.Generator().manual_seed(5)
    B, N = 3, 18
    x = torch.randint(3, V - 1, (B, N), generator=g)
    x[0, 13:] = EOS  # ends at x_13, then padding written with the EOS id
    x[1, 1] = EOS  # an end-of-turn inside the text: ordinary text
    x[1, 16] = EOS  # ends at x_16; x_17 is right padding
    am = torch.ones(B, N, dtype=torch.long)
    am[1, 17:] = 0  # row 2: truncated (no EOS at its end)
    n_real = am.sum(1).tolist()
    ends = batch_ends(x, am, EOS)
    assert ends == [13, 16, None]
    past_end = 0
    for _ in range(6):
        k, positions = sample_batch_layout(n_real, k_max=5, num_regions=4, random_k=True, generator=g, ends=ends)
        out = mtp_loss(student, teacher, x, k=k, prediction_positions=positions, mtp_token_id=MTP,
                       teacher_mode=mode, attention=attention, attention_mask=am, eos_token_id=EOS)
        ref_loss, ref_logits, ref_targets = naive_loss(student, teacher, x, positions, k, mode, attention, n_real,
                                                       EOS, False)
        torch.testing.assert_close(out.student_logits, ref_logits, rtol=1e-9, atol=1e-9)
        assert torch.equal(out.targets, ref_targets)
        torch.testing.assert_close(out.loss, ref_loss, rtol=1e-10, atol=1e-10)
        lay = out.layout
        for b, e in enumerate(ends):
            if e is not None:
                past_end += sum(p + k > e for p in lay.regions_per_row[b])
        assert all(p + k <= n_real[2] - 1 for p in lay.regions_per_row[2])
        if mode == "gt":  # EOS-filled ground-truth targets
            assert (out.targets == EOS).sum() >= sum(p + k >= e for b, e in enumerate(ends[:2])
                                                     for p in lay.regions_per_row[b])
    assert past_end > 0, "the sampler never placed a region whose targets run past the EOS"
