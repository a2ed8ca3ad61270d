"""vLLM's request ids and the client's ids they name: one mapping for the sidecar's taps and the
scheduler hook inside vLLM (which cuts to a hash only an id the sidecar would refuse). Stdlib only:
it is imported inside vLLM.
"""

from __future__ import annotations

__all__ = ["CHAT", "NUMBERED", "RESPONSES", "normalize_request_id"]

CHAT = "chatcmpl-"  # vLLM's prefix of a chat request's id
# a Responses API request's id (``resp_<uuid>``, or the body's ``request_id``) is the response's
# ``id``; vLLM runs it as engine requests ``<id>_<k>`` (k counts the turns of a built-in tool loop:
# vllm/entrypoints/openai/responses/serving.py ``sub_request_id``)
RESPONSES = "resp_"
# the prefixes of requests with an input numbered ``-<i>`` (completions' prompts, pooling's inputs:
# vllm/entrypoints/pooling/*/serving.py ``request_id_prefix``), and their operation names
NUMBERED = {
    "cmpl-": "text_completion",
    "embd-": "embeddings",
    "pooling-": "pooling",
    "classify-": "pooling",
    "score-": "pooling",
}


def normalize_request_id(raw: str) -> str:
    """vLLM's request id -> the id the client sent.

    Chat: ``chatcmpl-<id>`` -> ``<id>``. Completions: vLLM names prompt ``i`` of a
    request ``cmpl-<id>-<i>``; the first (the only one, usually) becomes ``<id>``,
    the others ``<id>-<i>``. Embeddings and the other pooling requests (``embd-``,
    ``pooling-``, ``classify-``, ``score-``) name their inputs the same way. Responses:
    turn ``k`` of response ``<id>`` is ``<id>_<k>``; the first becomes ``<id>`` (the
    response's ``id``), a built-in tool loop's later turns keep theirs.
    """
    if raw.startswith(CHAT) and len(raw) > len(CHAT):
        return raw[len(CHAT) :]
    if raw.startswith(RESPONSES) and raw.endswith("_0") and len(raw) > len(RESPONSES) + 2:
        return raw[:-2]
    for prefix in NUMBERED:
        if raw.startswith(prefix) and len(raw) > len(prefix):
            rest = raw[len(prefix) :]
            if rest.endswith("-0") and len(rest) > 2:
                rest = rest[:-2]
            return rest
    return raw
