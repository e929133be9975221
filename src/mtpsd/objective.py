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
step 0 and ``k = 1`` the student and teacher are the same function *when they compute in
the same precision*: hard targets are the student's argmax and ``KL(P_T || P_S) = 0``
exactly. That holds for float32 (the CPU default) and for the one-GPU recipe
(``train.precision: pure``: bf16 student and bf16 teacher). Under ``train.precision: mixed``
with bf16 (the multi-GPU paper profile) they are two functions: the student keeps float32
master weights under bf16 autocast, so its residual stream stays float32, while the frozen
teacher runs in bf16; at step 0, k = 1, SmolLM2-135M on 96 GSM8K texts (480 read-outs), the
KL is 0.0024 nats on average (max 0.042) and the hard target differs from the student's
argmax at 0.8% of the read-outs (``benchmarks/precision.py``). A float32 teacher under the same autocast would make
it 0 again at 2 more bytes per parameter (16 GB for 8B); the recipe keeps the bf16 teacher
(config/README.md, "Precision").

Cost: the output heads run only on the rows the loss reads (the ``S`` read-outs, plus the
prefix rows with ``prefix_loss``): hidden states are selected first, then the head is applied
(:func:`_head_on_rows`), so no ``(B, L, V)`` logits are formed. Everything the step indexes
with is computed on the host with the layout (``mtpsd.layout``): nothing here waits for the
device.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mtpsd.errors import MtpsdError
from mtpsd.flex import layout_attention_masks
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
    """Vocabulary ids that may be predicted, (V',); built once per vocabulary and device
    (a training step reuses it: no host work over the vocabulary, no copy to the device)."""
    return _allowed_columns(vocab_rows, tokenizer_size or vocab_rows, mtp_token_id, torch.device(device))


@functools.lru_cache(maxsize=8)
def _allowed_columns(vocab_rows: int, tokenizer_size: int, mtp_token_id: int, device: torch.device) -> torch.Tensor:
    banned = set(banned_token_ids(vocab_rows, tokenizer_size, mtp_token_id))
    return torch.tensor(sorted(set(range(vocab_rows)) - banned), dtype=torch.long).to(device)


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log-softmax in at least float32 (bf16 logits are upcast; float64 stays float64)."""
    return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)


def _unwrap(model):
    """The HF model inside DDP / accelerate wrappers (FSDP2 shards in place: no wrapper)."""
    while not hasattr(model, "get_output_embeddings") and hasattr(model, "module"):
        model = model.module
    return model


@contextlib.contextmanager
def _head_on_rows(model, rows: torch.Tensor):
    """While active, ``model``'s output head sees only the hidden states of ``rows`` (flat
    indices into the ``B * L`` packed positions): its input ``(B, L, h)`` becomes ``(R, h)`` and
    the model's logits ``(R, V)``. The model's own forward still runs (wrappers' hooks fire:
    DDP, FSDP2, accelerate's autocast and fp32 output conversion)."""
    head = _unwrap(model).get_output_embeddings()

    def select(_module, args):
        hidden = args[0]
        return (hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows),) + tuple(args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()


def _forward(model, ids, layout: PackedLayout, mask, rows: torch.Tensor) -> torch.Tensor:
    """Logits ``(R, V)`` of ``model`` on a packed input at the flat packed positions ``rows``.

    ``mask``: the layout's student mask, or its causal mask for the teacher (a dense 4D bool
    tensor for sdpa, a FlexAttention ``BlockMask`` for flex_attention; ``mtpsd.flex``).
    """
    with _head_on_rows(model, rows):
        return model(input_ids=ids, position_ids=layout.position_ids, attention_mask=mask, use_cache=False).logits


def mtp_loss_from_layout(student, teacher, layout: PackedLayout, *, teacher_mode: str = "hard",
                         prefix_loss: bool = False, tokenizer_size: int | None = None,
                         mtp_token_id: int) -> MTPLossOutput:
    """:func:`mtp_loss` on a prebuilt layout (the training loop builds layouts first).

    The output heads run only on the rows the loss reads (the ``S`` read-outs, plus the
    ``P`` prefix rows with ``prefix_loss``; the teacher's on the ``S`` read-outs): the
    ``(B, L, V)`` logits of every packed position are never formed. Every index is the
    layout's (built on the host), so the step reads nothing back from the device.
    """
    if teacher_mode not in TEACHER_MODES:
        raise MtpsdError(f"teacher_mode={teacher_mode!r}: choose one of {', '.join(TEACHER_MODES)}")
    s_mask, t_mask = layout_attention_masks(student, None if teacher_mode == "gt" else teacher, layout)
    S = layout.num_supervised
    logits = _forward(student, layout.input_ids, layout, s_mask, layout.head_rows(prefix_loss))  # (S [+ P], V)
    V = logits.shape[-1]
    allowed = allowed_columns(V, tokenizer_size, mtp_token_id, logits.device)  # (V',)
    s_logits = logits[:S]  # (S, V), region order then j (packed order)
    s_logp = _log_softmax(s_logits.index_select(-1, allowed))  # (S, V')
    s_arg = allowed[s_logp.detach().argmax(-1)]  # (S,) proposals y'_j
    t_logits = kl = None
    if teacher_mode == "gt":
        targets = layout.readout_targets
        terms = -s_logp.gather(-1, torch.searchsorted(allowed, targets)[:, None])[:, 0]  # (S,)
    else:
        # <MTP> input j of a region holds y'_j, the proposal read out at the packed position before it
        t_ids = layout.input_ids.flatten().index_copy(
            0, layout.proposal_dst, s_arg.index_select(0, layout.proposal_src)).view_as(layout.input_ids)  # (B, L)
        with torch.no_grad():
            t_logits = _forward(teacher, t_ids, layout, t_mask, layout.readout_index)  # (S, V)
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
        p_logp = _log_softmax(logits[S:].index_select(-1, allowed))  # (P, V')
        nxt = torch.searchsorted(allowed, layout.prefix_targets)
        total = total - p_logp.gather(-1, nxt[:, None]).sum()
        n_prefix = layout.num_prefix
        count += n_prefix
    loss = total / max(count, 1)
    with torch.no_grad():
        probs = s_logp.detach().exp()
        conf = probs.max(-1).values
        ent = -(probs * s_logp.detach()).sum(-1)
    return MTPLossOutput(
        loss=loss, student_logits=s_logits, targets=targets, teacher_logits=t_logits,
        offset=layout.readout_offset, student_argmax=s_arg, student_conf=conf,
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
