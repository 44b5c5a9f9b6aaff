"""Quality-gated rewriting: keep the image, fix the text, keep the original with its provenance (AITQE-style).

Example:
    >>> from mmsieve.generation import OpenAIBackend
    >>> step = Rewriter(OpenAIBackend("http://localhost:8000", "Qwen/Qwen2.5-VL-7B-Instruct"), threshold=1.5)
    >>> ds = ds.map(step, batched=True, batch_size=256)  # doctest: +SKIP
"""

from mmsieve.rewrite.aitqe import AITQE_PROMPT, AITQEOutput, aitqe_prompt, parse_aitqe
from mmsieve.rewrite.prompts import RewritePrompts, clean_reply
from mmsieve.rewrite.rewriter import Rewriter


__all__ = ["AITQE_PROMPT", "AITQEOutput", "RewritePrompts", "Rewriter", "aitqe_prompt", "clean_reply", "parse_aitqe"]
