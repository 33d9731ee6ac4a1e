"""llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``, same arguments) with
its KV-cache prefix reuse turned off.

llama-cpp-python reuses the cached keys and values of the prompt prefix a request shares with
the previous one, and decoding the rest in another split changes the numbers slightly (a
logprob moves by ~0.05 on the bundled model), so a row's output would depend on which row the
server answered before it. The tests compare runs whose request order differs (resume after
kill -9, 1 vs 3 replicas), so every request here is evaluated from an empty cache. The
server, its protocol and its numbers are otherwise llama.cpp's own.
"""

from __future__ import annotations

import runpy

import llama_cpp

_generate = llama_cpp.Llama.generate


def _generate_from_scratch(self, tokens, *args, **kwargs):
    if kwargs.get("reset", True):
        self.reset()  # n_tokens = 0: no prefix match, the whole prompt is decoded
    return _generate(self, tokens, *args, **kwargs)


if __name__ == "__main__":
    llama_cpp.Llama.generate = _generate_from_scratch
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
