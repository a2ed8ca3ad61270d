"""Tiny causal LMs for vLLM on a CPU: Llama-style and Qwen-style (grouped-query attention).

Random weights from a config (fixed seed), a byte-level BPE tokenizer trained
on local text (the standard library's ``*.py`` files), a ChatML chat template,
everything written with ``save_pretrained``. vLLM serves the folder like any
Hugging Face model. The output of a random model is noise; its shapes, work
and serving path are real. Sizes: about 3-4 M parameters, built in a few
seconds. Kept vLLM-friendly: ``head_dim`` 64 (the CPU attention kernels accept
32/64/128) and a vocabulary that is a multiple of 64.

Needs ``torch``, ``transformers`` and ``tokenizers`` (the ``diffusion`` extra
of ``.venv``); imported only when a model is built.
"""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path
from typing import Any

__all__ = ["BUILDERS", "build_llama", "build_qwen"]

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
VOCAB_SIZE = 4096  # a multiple of 64
SEED = 0
_DONE = ".jouletrace-complete"  # written last: a folder with it is complete


def _corpus(max_files: int = 300) -> list[str]:
    """Local training text: the first ``max_files`` stdlib sources, sorted (deterministic)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return [str(p) for p in sorted(root.glob("*.py"))[:max_files]]


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train(_corpus(), trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        bos_token=None,
        unk_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
        additional_special_tokens=["<|endoftext|>", "<|im_start|>"],
    )


def _save(final: Path, make_model: Any) -> Path:
    """Build (tokenizer, then model from it) into ``final`` unless it is already complete.

    Built in a temporary sibling folder and renamed into place, so two processes building
    the same model at once (test runs sharing the cache) never see a half-written folder.
    """
    if (final / _DONE).exists():
        return final
    import tempfile

    import torch
    from transformers import GenerationConfig

    final.parent.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    torch.manual_seed(SEED)
    tok = _tokenizer()
    model = make_model(tok)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    # Readable by transformers 4.x as well ("TokenizersBackend" is a transformers 5 name).
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    (out / _DONE).write_text("ok\n")
    if final.exists() and not (final / _DONE).exists():
        shutil.rmtree(final)  # an incomplete folder from an interrupted older build
    try:
        out.rename(final)
    except OSError:  # another process finished first: use its copy
        shutil.rmtree(out, ignore_errors=True)
    return final


def tiny_llama_config(tok: Any, **overrides: Any) -> Any:
    """The tiny Llama's config (4 layers, hidden 256, 4 heads of 64, 2 KV heads); ``overrides`` win."""
    from transformers import LlamaConfig

    fields: dict[str, Any] = {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
        "bos_token_id": None,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    return LlamaConfig(**{**fields, **overrides})


def build_llama(out: Path) -> Path:
    """A 4-layer Llama (hidden 256, 4 heads of 64, 2 KV heads, tied embeddings) into ``out``."""
    from transformers import LlamaForCausalLM

    def make(tok: Any) -> Any:
        return LlamaForCausalLM(tiny_llama_config(tok, dtype="float32"))

    return _save(out, make)


def build_qwen(out: Path) -> Path:
    """A 3-layer Qwen2 (hidden 384, 6 query heads of 64 sharing 2 KV heads, q/k/v bias) into ``out``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    def make(tok: Any) -> Any:
        cfg = Qwen2Config(
            vocab_size=VOCAB_SIZE,
            hidden_size=384,
            intermediate_size=1024,
            num_hidden_layers=3,
            num_attention_heads=6,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=False,
            bos_token_id=None,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            dtype="float32",
        )
        return Qwen2ForCausalLM(cfg)

    return _save(out, make)


BUILDERS = {"llama": build_llama, "qwen": build_qwen}
