"""Tiny offline LLMs: built from configs with a locally trained tokenizer, loadable, cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servers.models.cli import builders, default_dir


@pytest.mark.parametrize("kind", ["llama", "qwen"])
def test_a_tiny_llm_builds_loads_chats_and_is_reused_from_its_cache(kind: str, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = builders()[kind](tmp_path / kind)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["head_dim" if "head_dim" in cfg else "hidden_size"] % 64 == 0 and cfg["vocab_size"] % 64 == 0
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]  # grouped-query attention
    tok = AutoTokenizer.from_pretrained(out)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert gen.shape[1] == ids.shape[1] + 4
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert builders()[kind](out) == out and (out / "model.safetensors").stat().st_mtime_ns == stamp


def test_the_registry_lists_the_llms_and_caches_under_one_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"llama", "qwen"} <= set(builders())
    monkeypatch.setenv("JOULETRACE_MODELS_DIR", "/x")
    assert default_dir("llama") == Path("/x/tiny-llama")


def test_the_build_command_names_the_kinds_it_knows_when_asked_for_another(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sidecar.cli import main

    assert main(["models", "build", "gpt-17"]) == 2
    assert "llama" in capsys.readouterr().out
