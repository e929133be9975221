"""Expected peak memory per GPU of a training run, from the model config alone (no weights).

``plan_memory(shape, setup)`` adds up, in bytes per GPU (FSDP shards what it shards):

- student weights ``P b_w`` (``b_w`` = 4 for float32 master weights, ``train.precision:
  mixed``; 2 for bf16 weights, ``pure``), gradients ``P b_w``, optimizer state (AdamW: two
  states in the parameter dtype ``2 P b_w``; torchao AdamW8bit: int8 codes plus one scale per
  256-block ``2 P (1 + b_w / 256)``, except the input embedding's float32 states ``8 P_emb``,
  training.optim); all divided by G under FSDP over G GPUs;
- the autocast copy: bf16 autocast over float32 weights keeps a bf16 cast of every Linear
  weight from the forward to the backward (``2 P_linear``; under FSDP instead the unsharded
  bf16 root module and two layers);
- FSDP's gradient reduce-scatter, in the backward: the unsharded gradients of a group and the
  reduce-scatter input they are copied into (torch's ``foreach_reduce``), two compute-dtype copies
  of the largest group (the output head or the input embedding, else one decoder layer). The
  training loop reduce-scatters every micro-batch (training.distributed), so gradients stay
  sharded between micro-batches;
- plain data parallel (several GPUs without FSDP): DDP's gradient buckets ``P b_w``;
- the frozen teacher ``P b_c`` (replicated on every GPU, no gradient or optimizer state);
- activations of one micro-batch of ``B`` texts packed to ``L = N + M (k_max - 1)`` tokens
  (``T = B L``), coefficients in bytes per token per layer measured with saved-tensor hooks
  on HF Llama/Qwen3 (tests/test_memory_plan.py re-measures them):

  ====================  =====  ====  =====  ====  ===================  ==============
  weights / compute      h      I     q      L     q/k norm (q, kv)     outside layers
  ====================  =====  ====  =====  ====  ===================  ==============
  fp32 / fp32            24     16    16     4     8, 8                 13.5 h
  fp32 / bf16 autocast   26     8     8      2     6, 6                 11.5 h
  bf16 / bf16            16     8     8      2     6, 6                 9 h
  ====================  =====  ====  =====  ====  ===================  ==============

  (h hidden, I MLP width, q = heads x head_dim, L: the float copy of the packed 4D mask).
  With gradient checkpointing only each layer's input stays (``h b_w`` per token and
  layer) and one layer is recomputed in the backward;
- the loss head (mtpsd.objective): the output heads run only on the rows the loss reads,
  ``R = B (M k_max + N [prefix_loss])`` student rows and ``S = B M k_max`` teacher rows
  (read-outs): student logits ``(R, V)``, the teacher's ``(S, V)`` in the compute dtype, float32
  log-softmaxes and the KL temporaries (five ``(S, V)`` float32 tensors at once);
- the fp32 output conversion (``precision: mixed`` under bf16 autocast): accelerate converts
  the student's outputs to float32, so its ``(R, V)`` logits and their gradient are float32;
- the optimizer step's temporaries, a phase of their own: the activations are freed by then,
  so the peak is the larger of (activations, loss head, autocast copy) and the optimizer step,
  on top of weights, gradients, states and teacher. Per tensor, largest counted (bytes per
  element, measured on CPU by peak RSS on a 4096 x 4096 tensor: ``OPTIMIZER_TEMPORARIES``):
  PyTorch AdamW 2 float32 copies on CPU (per tensor), one float32 buffer of all parameters with
  the foreach path on CUDA (stated, not measured); torchao AdamW8bit compiled (CUDA; the same on
  CPU) two float32 buffers (8 bytes per element) of the largest tensor with 8-bit states and
  nothing for the float32 states of the input embedding (fused in place), in eager mode (CPU:
  ``training.optim`` runs it eagerly there) 13-14 float32 copies of the largest 8-bit-state
  tensor (int64 codes of the quantizer) and 6-10 of the input embedding.

Overhead on CUDA, stated not measured: 1 GiB CUDA context (kernels, cuBLAS workspace; seen
by ``torch.cuda.mem_get_info``, not by the allocator) and 10% allocator fragmentation on top
of the allocated peak (``expandable_segments`` keeps it low; the authors' FSDP run reports
56 GB allocated / 83 GB reserved without it). CPU plans have no overhead.

``disk_plan`` sizes the checkpoints a run keeps (training.resume): the ``eval.checkpoint_steps``
snapshots and the final model in the training dtype, and the two newest resume states (weights +
optimizer; the older one is what a run resumes from when the newest is damaged), three for a
moment while the next one is written.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from mtpsd.errors import MtpsdError

GiB = 1024**3
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
CUDA_CONTEXT_BYTES = 1 * GiB
FRAGMENTATION = 0.10
QUANTIZED_MIN_NUMEL = 4096  # torchao keeps smaller tensors' states in full precision
# optimizer step temporaries, bytes per element of one tensor (peak RSS above the step's start,
# 4096 x 4096 float32 / bf16 weights, CPU, one thread): (optimizer, mode, weight bytes) ->
# (per element of the largest 8-bit-state tensor, per element of the float32-state input embedding)
OPTIMIZER_TEMPORARIES = {
    ("adamw8bit", "compiled", 4): (8.0, 0.0), ("adamw8bit", "compiled", 2): (8.0, 0.0),
    ("adamw8bit", "eager", 4): (53.0, 24.0), ("adamw8bit", "eager", 2): (57.0, 41.0),
}
# bytes per token per decoder layer: (h, I, q, L, qk-norm q, qk-norm kv) and outside the layers (x h)
_ACT = {
    "fp32": ((24, 16, 16, 4, 8, 8), 13.5),
    "autocast": ((26, 8, 8, 2, 6, 6), 11.5),
    "low": ((16, 8, 8, 2, 6, 6), 9.0),
}


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs to know about an architecture (from a meta-device model)."""

    name: str
    params: int  # P (tied weights once)
    linear_params: int  # weights of nn.Linear modules (autocast casts these)
    root_params: int  # parameters outside the decoder layers (embeddings, final norm, lm_head)
    layer_params: int  # one decoder layer
    largest_param: int  # numel of the largest tensor
    embed_params: int  # input embedding (its adamw8bit states stay float32, training.optim)
    largest_quantized: int  # numel of the largest tensor with 8-bit adamw8bit states (not the input embedding)
    hidden: int
    intermediate: int
    layers: int
    q_dim: int
    kv_dim: int
    vocab: int
    qk_norm: bool


def _read_config(source: str | Path):
    """A transformers config from a checkpoint directory, a config JSON file or a hub id."""
    from transformers import AutoConfig

    path = Path(source)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MtpsdError(f"{path}: no config.json (not a model directory)")
        return AutoConfig.from_pretrained(path)
    if path.suffix == ".json":
        if not path.is_file():
            raise MtpsdError(f"{path}: architecture file not found")
        data = json.loads(path.read_text())
        if "model_type" not in data:
            raise MtpsdError(f"{path}: needs a model_type (a transformers config.json)")
        return AutoConfig.for_model(**data)
    try:
        return AutoConfig.from_pretrained(str(source))
    except OSError as e:
        raise MtpsdError(f"model config of {source!r} could not be read ({str(e).splitlines()[0]}); "
                         "pass --arch with a config.json (e.g. benchmarks/arch/llama31_8b.json)") from None


def model_shape(source: str | Path) -> ModelShape:
    """The sizes of the model a checkpoint directory, config JSON or hub id describes."""
    src = Path(str(source))
    return shape_of_config(_read_config(source), src.stem if src.suffix == ".json" else src.name)


def shape_of_config(cfg, name: str) -> ModelShape:
    """Build the model on the meta device (no memory, no weights) and read its sizes."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    params = dict(model.named_parameters())  # tied weights once
    layers = next((m for n, m in model.named_modules() if n.endswith("layers") and len(m) > 0), None)
    if layers is None:
        raise MtpsdError(f"{name}: no decoder layer list found in {type(model).__name__}")
    in_layers = {id(p) for p in layers.parameters()}
    embed = model.get_input_embeddings().weight
    linear = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)}
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    return ModelShape(
        name=name,
        params=sum(p.numel() for p in params.values()),
        linear_params=sum(linear.values()),
        root_params=sum(p.numel() for p in params.values() if id(p) not in in_layers),
        layer_params=sum(p.numel() for p in layers[0].parameters()),
        largest_param=max(p.numel() for p in params.values()),
        embed_params=embed.numel(),
        largest_quantized=max((p.numel() for p in params.values() if p is not embed and p.numel() >= QUANTIZED_MIN_NUMEL),
                              default=0),
        hidden=cfg.hidden_size, intermediate=cfg.intermediate_size, layers=len(layers),
        q_dim=heads * head_dim, kv_dim=kv * head_dim, vocab=cfg.vocab_size,
        qk_norm=any(n.endswith("q_norm") for n, _ in model.named_modules()),
    )


@dataclass(frozen=True)
class Setup:
    """Everything besides the model that sets the memory of one GPU."""

    device: str = "cuda"  # cuda | cpu
    compute_dtype: str = "bfloat16"  # model.dtype resolved: teacher dtype and autocast/compute dtype
    precision: str = "mixed"  # mixed: float32 master weights; pure: weights in compute_dtype
    optimizer: str = "adamw"  # adamw | adamw8bit
    gradient_checkpointing: bool = False
    micro_batch_size: int = 8
    global_batch_size: int = 128
    max_length: int = 160  # N
    num_regions: int = 5  # M
    k_max: int = 16
    teacher: bool = True  # teacher_mode != "gt"
    prefix_loss: bool = False
    gpus: int = 1
    fsdp: bool = False

    @property
    def seq_len(self) -> int:
        """Packed length L = N + M (k_max - 1): the longest micro-batch (k = k_max)."""
        return self.max_length + self.num_regions * (self.k_max - 1)

    @property
    def supervised(self) -> int:
        """Read-out rows S of a micro-batch at most (all regions kept, k = k_max): the teacher's head rows."""
        return self.micro_batch_size * self.num_regions * self.k_max

    @property
    def readouts(self) -> int:
        """Rows R the student's output head runs on at most: S, plus the prefix rows with prefix_loss."""
        return self.supervised + (self.micro_batch_size * self.max_length if self.prefix_loss else 0)

    @property
    def output_bytes(self) -> int:
        """Bytes per element of the student's logits: float32 under mixed precision with a
        16-bit compute dtype (accelerate's fp32 output conversion), else the compute dtype."""
        c = _BYTES[self.compute_dtype]
        return 4 if self.precision == "mixed" and c < 4 else c

    @property
    def weight_bytes(self) -> int:
        return _BYTES[self.compute_dtype] if self.precision == "pure" else max(4, _BYTES[self.compute_dtype])

    @property
    def shards(self) -> int:
        return self.gpus if self.fsdp and self.gpus > 1 else 1

    def changed(self, **kw) -> Setup:
        return dataclasses.replace(self, **kw)


def setup_from_config(cfg, *, device: str = "cuda", gpus: int | None = None, fsdp: bool | None = None) -> Setup:
    """The :class:`Setup` of a resolved config on ``device`` (``gpus``/``fsdp`` default to
    the accelerate config the run names)."""
    from mtpsd.training.launch import read_accelerate_config

    tc = cfg.train
    if gpus is None or fsdp is None:
        acc = read_accelerate_config(tc.accelerate_config) if tc.accelerate_config else {}
        gpus = int(acc.get("num_processes", 1)) if gpus is None else gpus
        fsdp = acc.get("distributed_type") == "FSDP" if fsdp is None else fsdp
    dtype = cfg.model.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    from mtpsd.layout import default_num_regions  # torch: not while the plan is printed

    return Setup(device=device, compute_dtype=dtype, precision=tc.precision, optimizer=tc.optimizer,
                 gradient_checkpointing=tc.gradient_checkpointing, micro_batch_size=tc.micro_batch_size,
                 global_batch_size=tc.global_batch_size, max_length=tc.max_length,
                 num_regions=tc.num_regions or default_num_regions(tc.max_length, tc.k_max), k_max=tc.k_max,
                 teacher=tc.teacher_mode != "gt", prefix_loss=tc.prefix_loss, gpus=gpus, fsdp=fsdp)


@dataclass
class MemoryPlan:
    shape: ModelShape
    setup: Setup
    parts: dict[str, float] = field(default_factory=dict)  # bytes per GPU, allocated
    overhead: float = 0.0  # CUDA context + fragmentation

    @property
    def allocated(self) -> float:
        return sum(self.parts.values())

    @property
    def peak(self) -> float:
        return self.allocated + self.overhead

    def fits(self, gpu_bytes: float) -> bool:
        return self.peak <= gpu_bytes

    def table(self) -> str:
        s = self.setup
        lines = [f"{self.shape.name}: {self.shape.params / 1e9:.2f}B parameters, {s.gpus} GPU(s)"
                 f"{' FSDP' if s.shards > 1 else ''}, precision {s.precision} ({s.compute_dtype} compute), "
                 f"optimizer {s.optimizer}, gradient checkpointing {'on' if s.gradient_checkpointing else 'off'}, "
                 f"micro-batch {s.micro_batch_size} x {s.seq_len} packed tokens"]
        for k, v in self.parts.items():
            lines.append(f"  {k:<34} {v / GiB:8.2f} GiB")
        if self.overhead:
            lines.append(f"  {'CUDA context + 10% fragmentation':<34} {self.overhead / GiB:8.2f} GiB")
        lines.append(f"  {'peak per GPU':<34} {self.peak / GiB:8.2f} GiB")
        return "\n".join(lines)

    def summary(self) -> str:
        """The parts of at least 1% of the peak, and the overhead."""
        out = [f"{k} {fmt_bytes(v)}" for k, v in self.parts.items() if v >= 0.01 * self.peak]
        if self.overhead:
            out.append(f"CUDA context + fragmentation {fmt_bytes(self.overhead)}")
        return ", ".join(out)


def activation_bytes_per_token(m: ModelShape, s: Setup) -> tuple[float, float]:
    """Saved activation bytes per token: (one decoder layer, outside the layers), no checkpointing."""
    low = _BYTES[s.compute_dtype] < 4
    key = "fp32" if not low else ("low" if s.precision == "pure" else "autocast")
    (ch, ci, cq, cl, nq, nkv), outside = _ACT[key]
    per_layer = ch * m.hidden + ci * m.intermediate + cq * m.q_dim + cl * s.seq_len
    if m.qk_norm:
        per_layer += nq * m.q_dim + nkv * m.kv_dim
    return per_layer, outside * m.hidden


def _head_bytes(m: ModelShape, s: Setup, out_bytes: int) -> float:
    """The loss head's peak (mtpsd.objective) with student logits of ``out_bytes`` per element."""
    c = _BYTES[s.compute_dtype]
    RV, SV = s.readouts * m.vocab, s.supervised * m.vocab
    if s.teacher:  # student logits, the teacher's (S, V), s/t log-softmax + three KL temporaries
        return RV * out_bytes + SV * (c + 5 * 4)
    return RV * out_bytes + SV * 3 * 4


def _activation_bytes(m: ModelShape, s: Setup) -> tuple[float, float, float]:
    """(bytes kept through the backward, largest transient on top of them, of which the fp32
    output conversion) for one micro-batch."""
    per_layer, outside = activation_bytes_per_token(m, s)
    T = s.micro_batch_size * s.seq_len
    if s.gradient_checkpointing:
        kept = T * (m.layers * s.weight_bytes * m.hidden + outside)
        layer_transient = 2 * T * per_layer  # the recomputed layer and its gradients
    else:
        kept = T * (m.layers * per_layer + outside)
        layer_transient = T * per_layer
    head = _head_bytes(m, s, s.output_bytes)
    conversion = head - _head_bytes(m, s, _BYTES[s.compute_dtype])
    transient = max(head, layer_transient)
    return kept, transient, conversion if transient == head else 0.0


def optimizer_step_bytes(m: ModelShape, s: Setup) -> float:
    """Temporaries of one optimizer step (the largest tensor's; FSDP shards it over G GPUs)."""
    G, bw = s.shards, s.weight_bytes
    if s.optimizer == "adamw":
        return m.params * bw / G if s.device == "cuda" else 2 * m.largest_param * bw / G
    mode = "compiled" if s.device == "cuda" else "eager"  # training.optim: eager on CPU
    per_q, per_embed = OPTIMIZER_TEMPORARIES[("adamw8bit", mode, 2 if bw == 2 else 4)]
    return max(per_q * m.largest_quantized, per_embed * m.embed_params) / G


def plan_memory(m: ModelShape, s: Setup) -> MemoryPlan:
    """The expected peak per GPU (see the module docstring for every term).

    Two phases share the resident part (weights, gradients, optimizer state, FSDP/DDP buffers,
    teacher): the forward/backward (autocast copy, activations, loss head) and the optimizer
    step (its temporaries); the peak is the resident part plus the larger phase.
    """
    if s.optimizer not in ("adamw", "adamw8bit"):
        raise MtpsdError(f"optimizer {s.optimizer!r}: the plan knows adamw and adamw8bit")
    G, bw, c = s.shards, s.weight_bytes, _BYTES[s.compute_dtype]
    P = m.params
    parts = {"student weights": P * bw / G, "gradients": P * bw / G}
    if s.optimizer == "adamw":
        state = 2 * P * bw
    else:  # 8-bit codes + a scale per 256 values; the input embedding's states in float32
        state = 2 * (P - m.embed_params) * (1 + bw / 256) + 2 * 4 * m.embed_params
    parts["optimizer state"] = state / G
    forward = 0.0  # the forward/backward phase
    if G > 1:  # FSDP2: the root module stays gathered in the compute dtype, plus two layers in flight
        parts["FSDP unsharded params"] = c * (m.root_params + 2 * m.layer_params)
        # backward: a group's unsharded gradients beside the reduce-scatter input they are copied into
        parts["FSDP gradient reduce-scatter"] = 2 * c * max(m.largest_param, m.layer_params)
        forward += parts["FSDP gradient reduce-scatter"]
    elif bw > c:  # autocast's bf16 weight casts live from the forward to the end of the backward
        parts["autocast bf16 weight copy"] = c * m.linear_params
        forward += parts["autocast bf16 weight copy"]
    if s.gpus > 1 and not s.fsdp:  # DDP: gradient buckets beside the gradients
        parts["DDP gradient buckets"] = P * bw
    if s.teacher:
        parts["teacher (frozen)"] = P * c
    kept, transient, conversion = _activation_bytes(m, s)
    parts["activations + loss head"] = kept + transient - conversion
    if conversion:
        parts["fp32 output conversion"] = conversion
    forward += kept + transient
    # the optimizer step comes after the activations are freed: only its excess over them counts
    parts["optimizer step temporaries"] = max(0.0, optimizer_step_bytes(m, s) - forward)
    plan = MemoryPlan(m, s, parts)
    if s.device == "cuda":
        plan.overhead = CUDA_CONTEXT_BYTES + FRAGMENTATION * plan.allocated
    return plan


def resident_bytes(plan: MemoryPlan) -> float:
    """What stays allocated through a whole step (weights, gradients, states, teacher, FSDP/DDP
    buffers): the plan's allocated bytes outside both phases."""
    phase = {"autocast bf16 weight copy", "FSDP gradient reduce-scatter", "activations + loss head",
             "fp32 output conversion", "optimizer step temporaries"}
    return sum(v for k, v in plan.parts.items() if k not in phase)


def optimizer_step_peak(plan: MemoryPlan) -> float:
    """The plan's allocated bytes at the optimizer step: resident + the step's temporaries
    (what ``torch.cuda.max_memory_allocated`` over the step alone measures)."""
    return resident_bytes(plan) + optimizer_step_bytes(plan.shape, plan.setup)


ONE_GPU_RECIPE = {"precision": "pure", "optimizer": "adamw8bit", "gradient_checkpointing": True}


def _describe(base: Setup, s: Setup) -> str:
    out = []
    if (s.precision, s.optimizer) != (base.precision, base.optimizer):
        out.append("the one-GPU recipe config/paper_1gpu.yaml (train.precision: pure, train.optimizer: adamw8bit, "
                   "train.gradient_checkpointing: true)")
    elif s.gradient_checkpointing != base.gradient_checkpointing:
        out.append("train.gradient_checkpointing: true")
    if s.micro_batch_size != base.micro_batch_size:
        out.append(f"train.micro_batch_size: {s.micro_batch_size}")
    if (s.gpus, s.fsdp) != (base.gpus, base.fsdp):
        out.append(f"FSDP over {s.gpus} GPUs (train.accelerate_config: config/accelerate/fsdp.yaml, "
                   f"num_processes: {s.gpus})")
    return "; ".join(out)


def fitting_alternatives(m: ModelShape, s: Setup, gpu_bytes: float, limit: int = 3) -> list[tuple[str, MemoryPlan]]:
    """Up to ``limit`` nearby settings that fit: fewest GPUs, then fewest changes, then the
    largest micro-batch (global batch and results unchanged: accumulation fills it)."""
    recipes = [{}, {"gradient_checkpointing": True}, ONE_GPU_RECIPE]
    found = []
    for gpus in sorted({s.gpus, 2, 4, 8}):
        if gpus < s.gpus:
            continue
        fsdp = s.fsdp if gpus == s.gpus else True
        for n_changes, recipe in enumerate(recipes):
            for mb in range(s.micro_batch_size, 0, -1):
                if s.global_batch_size % (mb * gpus):
                    continue
                c = s.changed(gpus=gpus, fsdp=fsdp, micro_batch_size=mb, **recipe)
                if c == s or (recipe and all(getattr(s, k) == v for k, v in recipe.items())):
                    continue
                p = plan_memory(m, c)
                if p.fits(gpu_bytes):
                    found.append(((gpus, n_changes + (mb != s.micro_batch_size), -mb), _describe(s, c), p))
                    break  # the largest micro-batch that fits for this combination
    found.sort(key=lambda t: t[0])
    return [(d, p) for _, d, p in found[:limit]]


def check_fits(m: ModelShape, s: Setup, gpu_bytes: float) -> MemoryPlan:
    """The plan, or an MtpsdError naming settings that would fit in ``gpu_bytes``."""
    plan = plan_memory(m, s)
    if plan.fits(gpu_bytes):
        return plan
    alts = fitting_alternatives(m, s, gpu_bytes)
    dev = "GPU" if s.device == "cuda" else "device"
    msg = (f"{m.name} ({m.params / 1e9:.2f}B parameters) does not fit: the memory plan needs {fmt_bytes(plan.peak)} "
           f"per {dev} ({plan.summary()}) and the {dev} has {fmt_bytes(gpu_bytes)}. ")
    if alts:
        msg += "Settings that would fit: " + " | ".join(f"{d} -> {fmt_bytes(p.peak)}" for d, p in alts)
    else:
        msg += "No nearby setting fits (tried the one-GPU recipe, gradient checkpointing, smaller micro-batches, FSDP up to 8 GPUs)."
    raise MtpsdError(msg + " (`mtpsd plan-memory` prints the breakdown)")


def disk_plan(m: ModelShape, s: Setup, *, steps: int, checkpoint_steps: list[int], checkpoint_every: int) -> dict:
    """Bytes on disk a run's checkpoints need at most (training.resume's retention)."""
    from mtpsd.training.resume import KEEP_RESUME_STATES  # torch: imported only when needed

    bw = s.weight_bytes
    model = m.params * bw
    state = model + plan_memory(m, s.changed(gpus=1, fsdp=False)).parts["optimizer state"]
    snapshots = len([x for x in set(checkpoint_steps) if 0 < x <= steps])
    return {"model_bytes": model, "snapshots": snapshots, "resume_state_bytes": state,
            "peak_bytes": (snapshots + 1) * model + (KEEP_RESUME_STATES + 1) * state,
            "resume_every": checkpoint_every}


def gpu_hours(shape: ModelShape, setup: Setup, throughput_files: list[Path], *, steps: int) -> str:
    """GPU-hours of ``steps`` optimizer steps from a measured segment of the same architecture
    (benchmarks/train_segment.py output), or "unmeasured"."""
    for f in throughput_files:
        try:
            rec = json.loads(Path(f).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if (rec.get("params") != shape.params or rec.get("device") != "cuda" or not rec.get("seconds_per_sequence")
                or rec.get("timed_includes_first_step")):
            continue
        h = steps * setup.global_batch_size * rec["seconds_per_sequence"] / 3600
        return (f"{h:,.0f} GPU-hours for {steps:,} steps ({rec['seconds_per_sequence'] * 1e3:.1f} ms per sequence "
                f"measured on {rec.get('gpu_name', 'a GPU')} at micro-batch {rec.get('micro_batch_size')}, {f}); "
                f"wall time ~ that / GPUs if FSDP scales linearly")
    return "unmeasured (no benchmarks/train_segment.py result for this architecture on CUDA)"


def fmt_bytes(x: float) -> str:
    """GiB with one decimal (MiB below 1 GiB, TiB from 1 TiB)."""
    if x < GiB:
        return f"{x / 1024**2:.0f} MiB"
    return f"{x / GiB:.1f} GiB" if x < 1024 * GiB else f"{x / 1024**4:.2f} TiB"


def check_run_fits(cfg, init: str | Path, *, device, gpus: int, fsdp: bool,
                   gpu_memory_gib: float | None = None) -> MemoryPlan | None:
    """Before train-mtp loads a weight: the plan for the checkpoint ``init`` on ``device``,
    checked against ``gpu_memory_gib`` or, on CUDA, the free memory of the device.
    Returns None when no memory size is known (CPU without ``gpu_memory_gib``)."""
    import torch

    if gpu_memory_gib is not None:
        limit = gpu_memory_gib * GiB
    elif device.type == "cuda":
        limit = torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device)
    else:
        return None
    shape = model_shape(init)
    setup = setup_from_config(cfg, device="cuda" if device.type == "cuda" else "cpu", gpus=gpus, fsdp=fsdp)
    return check_fits(shape, setup, limit)

