"""Synthetic prompt text of a target token length.

Text is drawn from a fixed pool of common English (or code) words with a seeded
generator, so a run is reproducible. The number of words for ``n`` tokens comes
from a *tokens-per-word ratio*:

- ``tokenize``: measured once per run through the server's ``POST /tokenize``
  (vLLM) on a 2,000-word sample of the same pool, so prompt lengths land within a
  few tokens of the target with the served model's own tokenizer;
- ``heuristic``: 1 word = 1 token, used when the server has no tokenize endpoint
  (the results say which method was used).

The chat template adds a few tokens per message on top; :mod:`loadgen.prompt_fit` then
grows or trims each request's prompt until the server's own count (``/tokenize`` with
the chat template) is the drawn target. The prompt lengths the server reports
(``usage.prompt_tokens``) are recorded per request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CODE_WORDS", "WORDS", "PromptBuilder"]

_WORDS_TEXT = (
    "the of and to in is that it was for on are with as his they be at one have this from or had by "
    "hot word but what some we can out other were all there when up use your how said an each she "
    "which do their time if will way about many then them write would like so these her long make "
    "thing see him two has look more day could go come did number sound no most people my over know "
    "water than call first who may down side been now find any new work part take get place made live "
    "where after back little only round man year came show every good me give our under name very "
    "through just form sentence great think say help low line differ turn cause much mean before move "
    "right boy old too same tell does set three want air well also play small end put home read hand "
    "port large spell add even land here must big high such follow act why ask men change went light "
    "kind off need house picture try us again animal point mother world near build self earth father "
    "head stand own page should country found answer school grow study still learn plant cover food "
    "sun four between state keep eye never last let thought city tree cross farm hard start might "
    "story saw far sea draw left late run while press close night real life few north open seem "
    "together next white children begin "
)
WORDS = tuple(_WORDS_TEXT.split())

_CODE_WORDS_TEXT = (
    "def return if else elif for while in import from class self None True False try except finally "
    "with as yield lambda pass break continue raise assert async await int str float list dict set "
    "tuple len range print open value result data items key index count total name path config logger "
    "request response error buffer offset size node parent child tree cache user session token model "
    "batch ( ) [ ] { } : , . = == != += -> + - * / % < > <= >= 0 1 2 10 100 'x' \"y\" "
)
CODE_WORDS = tuple(_CODE_WORDS_TEXT.split())


@dataclass(slots=True)
class PromptBuilder:
    """Makes text of about ``n`` tokens; ``tokens_per_word`` from :mod:`loadgen.client` calibration."""

    rng: np.random.Generator
    tokens_per_word: float = 1.0
    method: str = "heuristic"  # or "tokenize"

    def words_for(self, tokens: int) -> int:
        """Words to draw for ``tokens`` tokens (at least 1)."""
        return max(1, round(tokens / self.tokens_per_word))

    def words(self, tokens: int, code: bool = False) -> list[str]:
        """Words for about ``tokens`` tokens, drawn from the pool (code-like when ``code``)."""
        pool = CODE_WORDS if code else WORDS
        idx = self.rng.integers(0, len(pool), size=self.words_for(tokens))
        return [pool[i] for i in idx]

    @staticmethod
    def join(words: list[str], code: bool = False) -> str:
        """Words as text; code breaks a line every nine words."""
        if code:
            out: list[str] = []
            for i, w in enumerate(words):
                out.append(w)
                if i % 9 == 8:
                    out.append("\n   ")
            return " ".join(out)
        return " ".join(words)

    def text(self, tokens: int, code: bool = False) -> str:
        """About ``tokens`` tokens of text (code-like when ``code``)."""
        return self.join(self.words(tokens, code), code)

    def split(self, tokens: int, parts: int) -> list[int]:
        """Split ``tokens`` into ``parts`` positive shares (random, summing to ``tokens``)."""
        parts = max(1, min(parts, tokens))
        weights = self.rng.dirichlet(np.ones(parts))
        shares = np.maximum(1, np.floor(weights * tokens)).astype(int)
        shares[-1] = max(1, tokens - int(shares[:-1].sum()))
        return [int(s) for s in shares]


def calibration_text(words: int = 2000, seed: int = 12345) -> str:
    """A fixed sample of the word pool, for measuring tokens per word."""
    rng = np.random.default_rng(seed)
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=words))
