"""The student-forced online self-distillation objective (method.md section 4).

For every region ``r`` (prediction position ``p = p_r``) and ``j = 1..k``:

1. student proposals ``y'_j = argmax_v P_S(v | x_{<=p}, [MTP]^{j-1})`` (no gradient);
2. teacher distributions ``P_T(. | x_{<=p}, y'_{<j})`` from one teacher forward on the
   same packed layout with each region's masks replaced by ``y'_1..y'_{k-1}`` (always
   with the causal mask: the teacher is an ordinary causal LM);
3. loss, averaged over all ``S`` supervised positions of the batch:

   - hard (paper):  ``L = -1/S sum_{r,j} log P_S(t_{r,j} | .)``, ``t_{r,j} = argmax P_T``
   - soft:          ``L = -1/S sum_{r,j} sum_v P_T(v) log P_S(v)`` (= KL(P_T||P_S) + H(P_T))
   - gt:            ``t_{r,j} = x_{p+j}`` (offline MTP; no teacher pass)
   - prefix_loss:   the NTP terms ``-log P_S(x_{t+1} | x_{<=t})`` of the ground-truth
     positions outside the regions join the same mean (over ``S + S_prefix`` terms).

Every distribution is over the *allowed* vocabulary: ``<MTP>`` and vocabulary padding
rows (``mtpsd.vocab.banned_token_ids``) are removed before any softmax, so they never
win an argmax, carry no soft-target mass, and no ``0 * -inf`` appears. With this, at
step 0 and ``k = 1`` the student and teacher are the same function: hard targets are
the student's argmax and ``KL(P_T || P_S) = 0`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mtpsd.errors import MtpsdError
from mtpsd.flex import attention_mask_for
from mtpsd.layout import PackedLayout, build_layout
from mtpsd.vocab import banned_token_ids

TEACHER_MODES = ("hard", "soft", "gt")


@dataclass
class MTPLossOutput:
    """Result of :func:`mtp_loss`; the ``S`` rows are in region order then position order."""

    loss: torch.Tensor  # () mean over supervised positions (+ prefix positions if enabled)
    student_logits: torch.Tensor  # (S, V) full vocabulary, with gradient
    targets: torch.Tensor  # (S,) hard targets (teacher argmax, or ground truth for "gt")
    teacher_logits: torch.Tensor | None  # (S, V) detached; None in "gt" mode
    offset: torch.Tensor  # (S,) j - 1 in 0..k-1 (position inside the region)
    student_argmax: torch.Tensor  # (S,) the proposals y'_j (allowed vocabulary)
    student_conf: torch.Tensor  # (S,) top-1 probability of the student
    student_entropy: torch.Tensor  # (S,) entropy of the student (nats)
    kl: torch.Tensor | None  # (S,) KL(P_T || P_S); None in "gt" mode
    num_prefix: int = 0  # NTP terms added by prefix_loss
    layout: PackedLayout | None = field(default=None, repr=False)

    @property
    def agreement(self) -> torch.Tensor:
        """(S,) bool: target == student argmax."""
        return self.targets == self.student_argmax


def allowed_columns(vocab_rows: int, tokenizer_size: int | None, mtp_token_id: int,
                    device) -> torch.Tensor:
    """Vocabulary ids that may be predicted, (V',)."""
    banned = set(banned_token_ids(vocab_rows, tokenizer_size or vocab_rows, mtp_token_id))
    return torch.tensor([i for i in range(vocab_rows) if i not in banned], dtype=torch.long, device=device)


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log-softmax in at least float32 (bf16 logits are upcast; float64 stays float64)."""
    return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)


def _forward(model, ids, layout: PackedLayout, *, teacher: bool) -> torch.Tensor:
    """Logits (B, L, V) of ``model`` on a packed input.

    The mask is the layout's student mask, or its causal mask for the teacher: a dense 4D
    bool tensor for sdpa, a FlexAttention ``BlockMask`` for flex_attention (``mtpsd.flex``).
    """
    mask = attention_mask_for(model, layout, teacher=teacher)
    return model(input_ids=ids, position_ids=layout.position_ids, attention_mask=mask,
                 use_cache=False).logits


def mtp_loss_from_layout(student, teacher, layout: PackedLayout, *, teacher_mode: str = "hard",
                         prefix_loss: bool = False, tokenizer_size: int | None = None,
                         mtp_token_id: int) -> MTPLossOutput:
    """:func:`mtp_loss` on a prebuilt layout (the training loop builds layouts first)."""
    if teacher_mode not in TEACHER_MODES:
        raise MtpsdError(f"teacher_mode={teacher_mode!r}: choose one of {', '.join(TEACHER_MODES)}")
    logits = _forward(student, layout.input_ids, layout, teacher=False)  # (B, L, V)
    V = logits.shape[-1]
    allowed = allowed_columns(V, tokenizer_size, mtp_token_id, logits.device)  # (V',)
    s_logits = logits[layout.readout]  # (S, V), region order then j (packed order)
    s_logp = _log_softmax(s_logits.index_select(-1, allowed))  # (S, V')
    s_arg = allowed[s_logp.detach().argmax(-1)]  # (S,) proposals y'_j
    t_logits = kl = None
    if teacher_mode == "gt":
        targets = layout.targets_gt[layout.readout]
        terms = -s_logp.gather(-1, torch.searchsorted(allowed, targets)[:, None])[:, 0]  # (S,)
    else:
        # mask j of a region holds y'_j = the proposal at the previous packed position
        prop = torch.zeros_like(layout.input_ids).masked_scatter(layout.readout, s_arg)  # (B, L)
        t_ids = torch.where(layout.is_mtp, torch.roll(prop, 1, dims=1), layout.input_ids)
        with torch.no_grad():
            t_logits = _forward(teacher, t_ids, layout, teacher=True)[layout.readout]  # (S, V)
            t_logp = _log_softmax(t_logits.index_select(-1, allowed))  # (S, V')
            targets = allowed[t_logp.argmax(-1)]
            kl = (t_logp.exp() * (t_logp - s_logp.detach())).sum(-1)
        if teacher_mode == "hard":
            terms = -s_logp.gather(-1, t_logp.argmax(-1, keepdim=True))[:, 0]
        else:
            terms = -(t_logp.exp() * s_logp).sum(-1)
    total, count = terms.sum(), terms.numel()
    n_prefix = 0
    if prefix_loss:
        sel = layout.prefix_positions  # (B, L)
        p_logp = _log_softmax(logits[sel].index_select(-1, allowed))
        nxt = torch.searchsorted(allowed, layout.next_gt[sel])
        total = total - p_logp.gather(-1, nxt[:, None]).sum()
        n_prefix = int(sel.sum())
        count += n_prefix
    loss = total / max(count, 1)
    with torch.no_grad():
        probs = s_logp.detach().exp()
        conf = probs.max(-1).values
        ent = -(probs * s_logp.detach()).sum(-1)
    return MTPLossOutput(
        loss=loss, student_logits=s_logits, targets=targets, teacher_logits=t_logits,
        offset=layout.offset[layout.readout], student_argmax=s_arg, student_conf=conf,
        student_entropy=ent, kl=kl, num_prefix=n_prefix, layout=layout,
    )


def mtp_loss(student, teacher, input_ids: torch.Tensor, *, k: int, prediction_positions: torch.Tensor,
             mtp_token_id: int, teacher_mode: str = "hard", attention: str = "causal",
             attention_mask: torch.Tensor | None = None, prefix_loss: bool = False,
             eos_token_id: int | None = None, tokenizer_size: int | None = None) -> MTPLossOutput:
    """The packed MTP self-distillation loss (design.md public API).

    input_ids (B, N) ground-truth tokens; prediction_positions (B, M), -1 = unused slot;
    ``tokenizer_size``: rows at or beyond it are vocabulary padding (default: none).
    ``teacher`` may be ``None`` for ``teacher_mode="gt"``. Models must use
    ``attn_implementation`` "sdpa" (4D bool mask) or "flex_attention" (a BlockMask is built
    from the layout, ``mtpsd.flex``) and accept explicit ``position_ids``.
    """
    if teacher is None and teacher_mode != "gt":
        raise MtpsdError(f"teacher_mode={teacher_mode!r} needs a teacher model")
    layout = build_layout(input_ids, prediction_positions, k=k, mtp_token_id=mtp_token_id,
                          attention=attention, attention_mask=attention_mask, eos_token_id=eos_token_id)
    return mtp_loss_from_layout(student, teacher, layout, teacher_mode=teacher_mode,
                                prefix_loss=prefix_loss, tokenizer_size=tokenizer_size,
                                mtp_token_id=mtp_token_id)
