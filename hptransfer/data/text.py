"""Character-level text from Python's own standard library (``pydoc_data.topics``, about 465K characters).

It ships with every CPython, so nothing is downloaded; its content changes between Python versions, so never
hard-code a loss measured on it.
"""

from __future__ import annotations

import functools

import numpy as np
import torch


@functools.lru_cache(maxsize=1)
def builtin_text() -> str:
    """The pydoc topics text (the help() pages of the Python language reference), joined in key order."""
    import pydoc_data.topics as topics

    return "\n".join(topics.topics[key] for key in sorted(topics.topics))


class CharTokenizer:
    """Maps each distinct character of a text to an id (sorted, so the mapping is deterministic)."""

    def __init__(self, text: str) -> None:
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """Token ids of ``text`` (KeyError for a character outside the vocabulary). The vocabulary is sorted by code
        point, so a character's id is its rank: one vectorized search instead of a lookup per character."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        vocabulary = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        ids = np.searchsorted(vocabulary, codes)
        unknown = (ids >= len(vocabulary)) | (vocabulary[np.minimum(ids, len(vocabulary) - 1)] != codes)
        if unknown.any():
            raise KeyError(chr(int(codes[int(np.argmax(unknown))])))
        return torch.from_numpy(ids.astype(np.int64))

    def decode(self, ids: torch.Tensor) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def text_batch(batch_size: int, seq_len: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(inputs, targets, vocab_size): ``batch_size`` windows of the built-in text at seeded offsets."""
    text = builtin_text()
    tokenizer = CharTokenizer(text)
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(text) - seq_len - 1, (batch_size,), generator=generator)
    windows = torch.stack([tokenizer.encode(text[s:s + seq_len + 1]) for s in starts.tolist()])
    return windows[:, :-1], windows[:, 1:], tokenizer.vocab_size
