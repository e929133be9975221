"""Packed layout: positions, blocked mask, EOS/padding rules, sampling, and NTP equivalence."""

from __future__ import annotations

import torch

from mtpsd.layout import (
    batch_ends, build_layout, default_num_regions, sample_batch_layout, sample_layout, sample_positions,
)

MTP, EOS = 63, 2


def test_structure_example():
    x = torch.arange(10, 20)[None]  # (1, 10)
    lay = build_layout(x, torch.tensor([[2, 6]]), k=3, mtp_token_id=MTP)
    assert lay.input_ids[0].tolist() == [10, 11, 12, MTP, MTP, 13, 14, 15, 16, MTP, MTP, 17, 18, 19]
    assert lay.position_ids[0].tolist() == [0, 1, 2, 3, 4, 3, 4, 5, 6, 7, 8, 7, 8, 9]
    assert lay.region[0].tolist() == [-1, -1, 0, 0, 0, -1, -1, -1, 1, 1, 1, -1, -1, -1]
    assert lay.targets_gt[lay.readout].tolist() == [13, 14, 15, 17, 18, 19]
    m = lay.attn_mask[0, 0]
    assert m[4].tolist() == [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # mask 2 of region 0
    assert m[9].tolist() == [1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0]  # mask 1 of region 1
    assert m[11].tolist() == [1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 0, 0]  # gt 17 sees no masks
    bi = build_layout(x, torch.tensor([[2, 6]]), k=3, mtp_token_id=MTP, attention="bidirectional")
    assert bi.attn_mask[0, 0, 3].tolist() == [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert bi.attn_mask[0, 0, 2].tolist() == m[2].tolist()  # x_p itself still causal
    assert torch.equal(bi.causal_attn_mask, lay.attn_mask)


def test_eos_and_padding_rules():
    # row 0: the EOS at 1 is an end-of-turn inside the text (a chat template's); the text
    # ends at 4, and padding is written with the EOS id under a full attention mask
    x = torch.tensor([[5, EOS, 7, 8, EOS, EOS, EOS, EOS, EOS, EOS, EOS, EOS],
                      [5, 6, 7, 8, 9, 10, 11, 12, 0, 0, 0, 0]])
    am = torch.tensor([[1] * 12, [1] * 8 + [0] * 4])
    pos = torch.tensor([[0, 2, 6], [1, 4, 6]])
    lay = build_layout(x, pos, k=3, mtp_token_id=MTP, attention_mask=am, eos_token_id=EOS)
    # row 0: region at 0 (targets EOS,7,8), region at 2 holds the final EOS (8,EOS,EOS), last
    assert lay.regions_per_row[0] == [0, 2]
    assert lay.targets_gt[0][lay.readout[0]].tolist() == [EOS, 7, 8, 8, EOS, EOS]
    assert int((lay.valid[0] & ~lay.is_mtp[0]).sum()) == 5  # gt tokens after EOS are padding
    # row 1: no EOS; region at 6 needs targets 7..9, past the 8 real tokens: dropped
    assert lay.regions_per_row[1] == [1, 4]
    assert lay.num_sampled == 6  # 4 of the 6 sampled regions kept
    assert not (lay.attn_mask[:, 0] & lay.valid[:, :, None] & ~lay.valid[:, None, :]).any()  # no real->pad
    assert torch.equal(lay.attn_mask[:, 0].any(-1), torch.ones_like(lay.valid))  # no empty row


def test_truncated_text_has_no_end():
    x = torch.tensor([[5, EOS, 7, 8, 9, 10]])  # truncated: the last token is not EOS
    lay = build_layout(x, torch.tensor([[0, 2, 3]]), k=2, mtp_token_id=MTP, eos_token_id=EOS)
    assert lay.regions_per_row[0] == [0, 2, 3]
    assert lay.targets_gt[0][lay.readout[0]].tolist() == [EOS, 7, 8, 9, 9, 10]


def test_sampling_fits_and_rolls():
    g = torch.Generator().manual_seed(0)
    firsts = set()
    for _ in range(200):
        k, pos = sample_layout(160, k_max=16, num_regions=5, random_k=True, generator=g)
        assert 2 <= k <= 16 and len(pos) == 5
        assert (pos >= 0).all() and (pos + k <= 159).all() and (pos.diff() > 0).all()
        firsts.add(int(pos[0]))
    assert len(firsts) > 15  # rolling offsets cover many prefix lengths
    k, pos = sample_layout(160, k_max=16, num_regions=5, random_k=False, generator=g)
    assert k == 16 and default_num_regions(160, 16) == 5
    k, pos = sample_batch_layout([40, 5], k_max=8, num_regions=4, random_k=False, generator=g)
    assert pos.shape == (2, 4) and (pos[1] == -1).all()


def test_gt_logits_equal_plain_forward(tiny_llama):
    model = tiny_llama(64, seed=4)
    g = torch.Generator().manual_seed(3)
    x = torch.randint(3, 62, (2, 30), generator=g)
    k, pos = sample_batch_layout([30, 30], k_max=6, num_regions=3, random_k=True, generator=g)
    lay = build_layout(x, pos, k=k, mtp_token_id=MTP)
    out = model(input_ids=lay.input_ids, position_ids=lay.position_ids, attention_mask=lay.attn_mask).logits
    ref = model(input_ids=x).logits
    gt = lay.valid & ~lay.is_mtp
    rows = torch.arange(2)[:, None].expand_as(gt)
    torch.testing.assert_close(out[gt], ref[rows[gt], lay.orig_index[gt]], rtol=1e-12, atol=1e-12)


def test_sampling_reaches_past_the_end_of_a_text_that_ends_at_eos():
    """A text ending at EOS x_e: every p < e is a prediction position (targets past e are EOS);
    a truncated text (no EOS) keeps all k targets inside it."""
    g = torch.Generator().manual_seed(1)
    e, n, k = 37, 40, 6  # x_37 is the EOS, x_38.. padding written with the EOS id
    lasts, truncated = set(), set()
    for _ in range(300):
        pos = sample_positions(n, k=k, num_regions=4, generator=g, eos_at=e)
        assert (pos >= 0).all() and (pos < e).all() and (pos.diff() > 0).all()
        lasts.add(int(pos[-1]))
        truncated.add(int(sample_positions(n, k=k, num_regions=4, generator=g).max()))
    assert max(lasts) == e - 1 and any(p + k > e for p in lasts)  # regions whose targets run past the EOS
    assert max(truncated) <= n - k - 1
    ids = torch.full((2, n), EOS)
    ids[0, :e] = torch.arange(3, 3 + e)
    ids[1] = torch.arange(3, 3 + n)  # no EOS: truncated
    am = torch.ones(2, n, dtype=torch.long)
    assert batch_ends(ids, am, EOS) == [e, None]
    k2, pos = sample_batch_layout([n, n], k_max=k, num_regions=4, random_k=False, generator=g, ends=[e, None])
    assert k2 == k and (pos[0] < e).all() and (pos[1] + k <= n - 1).all()
