"""Packed training layout: many MTP problems in one sequence (method.md section 3).

A text ``x_0 .. x_{N-1}`` with regions at prediction positions ``p_1 < .. < p_M``
becomes the student input

    x_0 .. x_{p_1} [MTP]*(k-1) x_{p_1+1} .. x_{p_2} [MTP]*(k-1) x_{p_2+1} ...

- position ids: ground-truth token ``x_t`` keeps ``t``; mask ``j`` (1..k-1) of region
  ``r`` gets ``p_r + j``;
- blocked mask: a ground-truth token attends to ground-truth tokens ``t' <= t`` only; a
  mask of region ``r`` attends to ground-truth tokens ``t' <= p_r`` and to masks of its
  own region (``j' <= j`` causal; every ``j'`` when ``attention="bidirectional"``);
- read-out: the logits at ``x_{p_r}`` and at its ``k-1`` masks predict ``x_{p_r+1..p_r+k}``.
  In packed order these ``k`` positions are consecutive, so read-out order is region
  order then ``j`` order.

End of text and padding (method.md section 3, "End of text"):

- ``attention_mask (B, N)`` marks real tokens (right padding); a region needs its
  prefix token real: ``p_r < n_b`` (``n_b`` = real tokens of row ``b``).
- With ``eos_token_id``, the text ends at its final EOS: ``e_b`` is the start of the
  trailing run of EOS among the real tokens of row ``b`` (none when the last real token
  is not EOS, e.g. a truncated text; a run covers padding written with the EOS id).
  EOS-id tokens earlier in the row are ordinary text: a chat template closes the system
  and user turns with the same end-of-turn token that ends the answer (ChatML
  ``<|im_end|>``, Llama 3 ``<|eot_id|>``). The first region whose targets
  ``x_{p+1..p+k}`` contain ``e_b`` (``p < e_b <= p + k``) is the row's last region; its
  targets past ``e_b`` are EOS. Later regions are dropped, and so are ground-truth
  tokens after ``e_b`` (padding: no attention, no loss).
- A region whose ``k`` targets run past the last real token without reaching EOS
  cannot be supervised and is dropped (the sampler never places one).
- The sampler places regions up to the end of the text: in a text that ends at EOS
  (``e_b``) any ``p < e_b`` is a prediction position, so a region's targets may run past
  the EOS (they are EOS) and the EOS-filling rule above runs in training; in a text that
  does not end at EOS (truncated) all ``k`` targets stay inside it.
- Padding positions attend only to themselves (so no attention row is empty, which
  would give NaN in sdpa) and nothing attends to them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from mtpsd.errors import MtpsdError


@dataclass
class PackedLayout:
    """The packed student input and its bookkeeping; every ``(B, L)`` tensor is contiguous.

    Besides the ``(B, L)`` tensors, the layout carries what the loss reads at the ``S``
    read-out rows (and the ``P`` NTP rows of ``prefix_loss``) as flat indices into the
    ``B * L`` packed positions, and their counts as Python ints. All of it is computed on the
    host when the layout is built, so the loss needs no data-dependent indexing (a boolean
    mask selects a number of rows only known after a device-to-host read) and no count
    read back from the device (:meth:`to` moves a layout to the training device).
    """

    input_ids: torch.Tensor  # (B, L) student input (ground truth + <MTP>; pad filled with mtp id)
    position_ids: torch.Tensor  # (B, L)
    attn_mask: torch.Tensor  # (B, 1, L, L) bool, True = attend (student mask)
    causal_attn_mask: torch.Tensor  # (B, 1, L, L) bool, the causal variant (teacher mask)
    is_mtp: torch.Tensor  # (B, L) bool
    region: torch.Tensor  # (B, L) region index of x_{p_r} and its masks, -1 elsewhere
    offset: torch.Tensor  # (B, L) j - 1 in 0..k-1 at read-out positions, -1 elsewhere
    readout: torch.Tensor  # (B, L) bool
    targets_gt: torch.Tensor  # (B, L) ground-truth target at read-out positions, -100 elsewhere
    next_gt: torch.Tensor  # (B, L) next ground-truth token at real gt positions (NTP target), -100 elsewhere
    valid: torch.Tensor  # (B, L) bool, not padding
    orig_index: torch.Tensor  # (B, L) source index t of ground-truth tokens, -1 for masks/padding
    readout_index: torch.Tensor  # (S,) flat packed index b * L + i of the read-out rows, in packed order
    readout_targets: torch.Tensor  # (S,) targets_gt at the read-out rows
    readout_offset: torch.Tensor  # (S,) offset at the read-out rows
    prefix_index: torch.Tensor  # (P,) flat packed index of the prefix positions (NTP rows), packed order
    prefix_targets: torch.Tensor  # (P,) next_gt at the prefix positions
    proposal_dst: torch.Tensor  # (Q,) flat packed index of every <MTP> input (real, not padding)
    proposal_src: torch.Tensor  # (Q,) read-out row (0..S-1) whose proposal fills it: the packed position before
    k: int
    attention: str  # "causal" | "bidirectional" (the student's mask among a region's <MTP> inputs)
    regions_per_row: list[list[int]]  # kept prediction positions p_r per row
    num_sampled: int = 0  # prediction positions given (>= 0), kept or not

    @property
    def num_supervised(self) -> int:
        """S, the read-out rows (a host-side count)."""
        return len(self.readout_index)

    @property
    def num_prefix(self) -> int:
        """P, the NTP rows of ``prefix_loss`` (a host-side count)."""
        return len(self.prefix_index)

    @property
    def prefix_positions(self) -> torch.Tensor:
        """(B, L) bool: ground-truth positions outside the regions with an NTP target."""
        return self.valid & ~self.is_mtp & ~self.readout & (self.next_gt >= 0)

    @property
    def student_is_causal(self) -> bool:
        """Whether the student mask equals the causal one: ``attention="causal"``, or ``k <= 2``
        (a region then has at most one ``<MTP>`` input, so "bidirectional" changes nothing)."""
        return self.attention == "causal" or self.k <= 2

    def num_terms(self, prefix_loss: bool) -> int:
        """Loss terms this layout contributes (read-outs, plus NTP terms with prefix_loss)."""
        return self.num_supervised + (self.num_prefix if prefix_loss else 0)

    def head_rows(self, prefix_loss: bool) -> torch.Tensor:
        """(R,) flat packed indices of the rows whose logits the loss reads: the ``S``
        read-outs, then (``prefix_loss``) the ``P`` prefix positions."""
        return torch.cat([self.readout_index, self.prefix_index]) if prefix_loss else self.readout_index

    def to(self, device) -> PackedLayout:
        """The layout with its tensors on ``device`` (itself if they are there already).

        A copy to CUDA goes through pinned memory without blocking (a plain copy from pageable
        memory makes the host wait until the device has caught up: one synchronisation per tensor).
        """
        device = torch.device(device)
        if self.input_ids.device == device:
            return self
        pin = device.type == "cuda" and self.input_ids.device.type == "cpu"

        def move(t: torch.Tensor) -> torch.Tensor:
            return (t.pin_memory() if pin else t).to(device, non_blocking=pin)

        return dataclasses.replace(self, **{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), torch.Tensor)})


def default_num_regions(n_tokens: int, k_max: int) -> int:
    """M = N / (2 k_max) (method.md section 3), at least 1."""
    return max(1, n_tokens // (2 * k_max))


def sample_k(*, k_max: int, random_k: bool, generator: torch.Generator) -> int:
    """k ~ U{2..k_max} (paper's best setting) or k = k_max ("Static k" ablation)."""
    if not random_k:
        return k_max
    return int(torch.randint(2, k_max + 1, (1,), generator=generator))


def sample_positions(n_tokens: int, *, k: int, num_regions: int, generator: torch.Generator,
                     eos_at: int | None = None) -> torch.Tensor:
    """Evenly spaced prediction positions with a random ("rolling") offset, (M,).

    Valid positions are ``p in [0, span - 1]``: ``span = e`` for a text ending at its EOS
    ``x_e`` (``eos_at``, :func:`end_of_text`: every prefix before the EOS; targets past it
    are EOS, method.md section 3), else ``span = n - k`` (all ``k`` targets inside the text).
    With ``stride = span / M``, ``p_r = floor(o + r * stride)`` for ``o ~ U[0, stride)``, so
    over training every prefix length is a prediction position. Slots that do not fit
    (short texts) are -1.
    """
    out = torch.full((num_regions,), -1, dtype=torch.long)
    span = n_tokens - k if eos_at is None else eos_at
    if span <= 0:
        return out
    m = min(num_regions, span)  # stride >= 1: distinct positions
    stride = span / m
    o = float(torch.rand((), generator=generator, dtype=torch.float64)) * stride
    pos = [int(o + r * stride) for r in range(m)]
    out[:m] = torch.tensor([min(p, span - 1) for p in pos], dtype=torch.long)
    return out


def sample_layout(n_tokens: int, *, k_max: int, num_regions: int, random_k: bool,
                  generator: torch.Generator, eos_at: int | None = None) -> tuple[int, torch.Tensor]:
    """Draw ``k`` and the prediction positions ``(M,)`` for one text of ``n_tokens``
    (ending at its EOS ``x_{eos_at}``, or not: ``None``)."""
    k = sample_k(k_max=k_max, random_k=random_k, generator=generator)
    return k, sample_positions(n_tokens, k=k, num_regions=num_regions, generator=generator, eos_at=eos_at)


def sample_batch_layout(lengths: list[int], *, k_max: int, num_regions: int, random_k: bool,
                        generator: torch.Generator, ends: list[int | None] | None = None) -> tuple[int, torch.Tensor]:
    """One ``k`` for a micro-batch and positions per row, (B, M), from each row's length and
    where its text ends (``ends[b]``: its EOS index, :func:`end_of_text`; ``None`` = no EOS)."""
    k = sample_k(k_max=k_max, random_k=random_k, generator=generator)
    ends = ends if ends is not None else [None] * len(lengths)
    rows = [sample_positions(n, k=k, num_regions=num_regions, generator=generator, eos_at=e)
            for n, e in zip(lengths, ends)]
    return k, torch.stack(rows)


def batch_ends(input_ids: torch.Tensor, attention_mask: torch.Tensor, eos_token_id: int | None) -> list[int | None]:
    """:func:`end_of_text` of every row of a right-padded batch."""
    lengths = attention_mask.sum(1).tolist()
    return [end_of_text(row, n, eos_token_id) for row, n in zip(input_ids.tolist(), lengths)]


def end_of_text(ids: list[int], n_real: int, eos_token_id: int | None) -> int | None:
    """Index ``e_b`` of the EOS that ends the text: the start of the trailing EOS run, or None."""
    if eos_token_id is None or n_real == 0 or ids[n_real - 1] != eos_token_id:
        return None
    e = n_real - 1
    while e > 0 and ids[e - 1] == eos_token_id:
        e -= 1
    return e


def _kept_regions(n_real: int, positions: list[int], k: int, eos: int | None) -> tuple[list[int], int]:
    """Kept prediction positions of one row (text ending at ``eos``, see :func:`end_of_text`)
    and the index of its last real gt token."""
    last_gt = n_real - 1 if eos is None else eos
    kept: list[int] = []
    for p in sorted(p for p in positions if p >= 0):
        if p > last_gt or (kept and p == kept[-1]):
            continue
        if eos is not None and p >= eos:
            continue
        if eos is not None and p + k >= eos:
            kept.append(p)  # first region whose targets contain EOS: the last one
            break
        if p + k <= n_real - 1:
            kept.append(p)
    return kept, last_gt


def build_layout(input_ids: torch.Tensor, prediction_positions: torch.Tensor, *, k: int,
                 mtp_token_id: int, attention: str = "causal",
                 attention_mask: torch.Tensor | None = None,
                 eos_token_id: int | None = None) -> PackedLayout:
    """Pack ``input_ids (B, N)`` with regions at ``prediction_positions (B, M)`` (-1 = unused).

    Returns a :class:`PackedLayout` of length ``L = max_b (gt_b + m_b (k - 1))`` on the device
    of ``input_ids`` (it is built on the host).
    """
    if attention not in ("causal", "bidirectional"):
        raise MtpsdError(f"attention={attention!r}: choose 'causal' or 'bidirectional'")
    if k < 1:
        raise MtpsdError(f"k={k}: must be >= 1")
    if input_ids.dim() != 2 or prediction_positions.dim() != 2 or len(input_ids) != len(prediction_positions):
        raise MtpsdError("input_ids must be (B, N) and prediction_positions (B, M)")
    B, N = input_ids.shape
    dev = input_ids.device
    input_ids, prediction_positions = input_ids.cpu(), prediction_positions.cpu()  # host work from here
    am = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.cpu().bool()
    rows = []
    for b in range(B):
        ids = input_ids[b].tolist()
        n_real = int(am[b].sum())
        if not bool(am[b, :n_real].all()):
            raise MtpsdError("attention_mask must be right-padded (real tokens first)")
        eos_at = end_of_text(ids, n_real, eos_token_id)
        kept, last_gt = _kept_regions(n_real, prediction_positions[b].tolist(), k, eos_at)
        # per packed position: (token, pos_id, orig t, region, j, gt_target, next_gt)
        seq = []
        r = 0
        for t in range(last_gt + 1):
            nxt = ids[t + 1] if t + 1 <= last_gt else -100
            seq.append([ids[t], t, t, -1, -1, -100, nxt])
            if r < len(kept) and kept[r] == t:
                for j in range(k):
                    tgt_t = t + 1 + j
                    tgt = eos_token_id if (eos_at is not None and tgt_t >= eos_at) else ids[tgt_t]
                    if j == 0:
                        seq[-1][3:6] = [r, 0, tgt]
                    else:
                        seq.append([mtp_token_id, t + j, -1, r, j, tgt, -100])
                r += 1
        rows.append((seq, kept))
    L = max(1, max(len(s) for s, _ in rows))
    pad = [mtp_token_id, 0, -1, -1, -1, -100, -100]
    # built on the host (the bookkeeping below indexes by value), then moved to input_ids' device
    table = torch.tensor([s + [pad] * (L - len(s)) for s, _ in rows], dtype=torch.long)  # (B, L, 7)
    valid = torch.tensor([[i < len(s) for i in range(L)] for s, _ in rows], dtype=torch.bool)
    # contiguous: FlexAttention's compiled mask function cannot read strided views (mtpsd.flex)
    tok, pos, orig, region, j, tgt, nxt = (c.contiguous() for c in table.unbind(-1))
    is_mtp = valid & (orig < 0)
    is_gt = valid & (orig >= 0)
    readout = region >= 0
    # prefix end of the region each mask belongs to: its x_{p_r} index = pos - j
    pref = torch.where(is_mtp, pos - j, orig)  # (B, L)
    q_gt, k_gt = is_gt[:, :, None], is_gt[:, None, :]
    q_m, k_m = is_mtp[:, :, None], is_mtp[:, None, :]
    k_before = orig[:, None, :] <= pref[:, :, None]  # gt key index <= query's prefix end
    same_region = region[:, :, None] == region[:, None, :]
    causal_j = j[:, None, :] <= j[:, :, None]
    gt_part = (q_gt | q_m) & k_gt & k_before
    mask_causal = gt_part | (q_m & k_m & same_region & causal_j)
    mask_student = mask_causal if attention == "causal" else gt_part | (q_m & k_m & same_region)
    eye = torch.eye(L, dtype=torch.bool)[None] & ~valid[:, :, None]
    offset = torch.where(readout, j.clamp(min=0), -1)
    prefix = valid & ~is_mtp & ~readout & (nxt >= 0)
    readout_index = readout.flatten().nonzero().squeeze(1)  # (S,) packed order
    prefix_index = prefix.flatten().nonzero().squeeze(1)  # (P,)
    # the teacher input: <MTP> input j of a region holds the proposal y'_j, read out at the
    # packed position before it (x_{p_r} for j = 1, else <MTP> input j - 1: both read-out rows)
    proposal_dst = is_mtp.flatten().nonzero().squeeze(1)  # (Q,)
    proposal_src = torch.searchsorted(readout_index, proposal_dst - 1)  # (Q,) rows of readout_index
    assert torch.equal(readout_index[proposal_src], proposal_dst - 1)
    return PackedLayout(
        input_ids=tok, position_ids=pos,
        attn_mask=(mask_student | eye)[:, None], causal_attn_mask=(mask_causal | eye)[:, None],
        is_mtp=is_mtp, region=region, offset=offset, readout=readout, targets_gt=tgt, next_gt=nxt, valid=valid,
        orig_index=orig, readout_index=readout_index, readout_targets=tgt.flatten()[readout_index],
        readout_offset=offset.flatten()[readout_index], prefix_index=prefix_index,
        prefix_targets=nxt.flatten()[prefix_index], proposal_dst=proposal_dst, proposal_src=proposal_src,
        k=k, attention=attention, regions_per_row=[kept for _, kept in rows],
        num_sampled=int((prediction_positions >= 0).sum()),
    ).to(dev)
