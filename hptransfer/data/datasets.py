"""Training data for the recipes: token streams (built-in text, a user text file, a pre-tokenized file)
and a synthetic classification set, each with a deterministic train/validation split.

Token files follow the nanoGPT convention: a flat binary array of uint16 or uint32 token ids, memory-mapped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..errors import HptError
from .synthetic import gaussian_mixture
from .text import CharTokenizer, builtin_text


class DataError(HptError, ValueError):
    """Bad data configuration: missing file, wrong dtype for the vocabulary, unknown kind."""


@dataclass
class TokenStream:
    """Train and validation token ids (1-d int64 tensors or memmaps) and the vocabulary size."""

    train: Any
    val: Any
    vocab_size: int
    task: Literal["lm"] = "lm"

    def batch(self, split: str, batch_size: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        data = self.train if split == "train" else self.val
        if len(data) <= seq_len + 1:
            raise DataError(f"the {split} split has {len(data)} tokens, fewer than seq_len + 1 = {seq_len + 1}; "
                            "lower train.seq_len or data.val_fraction")
        starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=generator).tolist()
        windows = torch.stack([torch.as_tensor(np.asarray(data[s:s + seq_len + 1]).astype(np.int64)) for s in starts])
        return windows[:, :-1], windows[:, 1:]

    @property
    def model_options(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size}

    def check_fits(self, seq_len: int, key: str = "train.seq_len") -> None:
        """Refuse a split too short for one window of ``seq_len`` + 1 tokens (checked before any trial runs)."""
        if self.vocab_size < 2:
            raise DataError(f"the data has a vocabulary of {self.vocab_size} token(s): it is empty or one "
                            "repeated character; point data.path at real text")
        for split, data in (("train", self.train), ("validation", self.val)):
            if len(data) <= seq_len + 1:
                raise DataError(f"the {split} split has {len(data)} tokens, too few for {key}={seq_len} (a window "
                                f"needs {seq_len + 2} or more): give more data (data.path), lower {key}, or "
                                "change data.val_fraction")


@dataclass
class Classification:
    """Train and validation (points, labels) for classifiers (resmlp, mlp)."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    n_classes: int
    task: Literal["classification"] = "classification"

    def batch(self, split: str, batch_size: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        points, labels = self.train if split == "train" else self.val
        index = torch.randint(0, len(labels), (batch_size,), generator=generator)
        return points[index], labels[index]

    @property
    def model_options(self) -> dict[str, Any]:
        return {"d_in": int(self.train[0].shape[1]), "d_out": self.n_classes}

    def check_fits(self, seq_len: int, key: str = "train.seq_len") -> None:
        """Refuse an empty split (a batch samples with replacement, so any non-empty split serves any batch)."""
        for split, (_, labels) in (("train", self.train), ("validation", self.val)):
            if len(labels) == 0:
                raise DataError(f"the {split} split is empty: raise data.n_train / data.n_val, or change "
                                "data.val_fraction")


def _split(tokens: Any, val_fraction: float) -> tuple[Any, Any]:
    cut = int(len(tokens) * (1 - val_fraction))
    return tokens[:cut], tokens[cut:]


def load_data(cfg: Any) -> TokenStream | Classification:
    """Build the dataset a data config describes (kind: text | tokens | gaussian_mixture | digits)."""
    kind = cfg.kind
    if kind == "text":
        if cfg.path:
            path = Path(cfg.path).expanduser()
            if not path.is_file():
                raise DataError(f"data.path={str(path)!r} does not exist; point it at a UTF-8 text file, or set "
                                "data.path=null for the built-in text")
            text = path.read_text(encoding="utf-8", errors="replace")
        else:
            text = builtin_text()
        tokenizer = CharTokenizer(text)
        train, val = _split(tokenizer.encode(text), cfg.val_fraction)
        return TokenStream(train, val, tokenizer.vocab_size)
    if kind == "tokens":
        path = Path(str(cfg.path)).expanduser()
        if not path.is_file():
            raise DataError(f"data.path={str(path)!r} does not exist; give a binary file of token ids "
                            "(nanoGPT's train.bin convention)")
        dtype = {"uint16": np.uint16, "uint32": np.uint32}.get(cfg.dtype)
        if dtype is None:
            raise DataError(f"data.dtype={cfg.dtype!r}: use uint16 or uint32")
        if cfg.vocab_size is None:
            raise DataError("data.vocab_size is required for a token file (the tokenizer's vocabulary size)")
        if path.stat().st_size % np.dtype(dtype).itemsize:
            raise DataError(f"{path} has {path.stat().st_size} bytes, not a multiple of {cfg.dtype}'s size: the "
                            "file was written with another dtype")
        tokens = np.memmap(path, dtype=dtype, mode="r")
        sample = np.asarray(tokens[: min(len(tokens), 1_000_000)])
        if len(sample) and int(sample.max()) >= cfg.vocab_size:
            other = "uint32" if cfg.dtype == "uint16" else "uint16"
            raise DataError(f"{path} holds token id {int(sample.max())} >= data.vocab_size={cfg.vocab_size}: the "
                            f"dtype ({cfg.dtype}) or the vocabulary size does not match the file (try "
                            f"data.dtype={other})")
        train, val = _split(tokens, cfg.val_fraction)
        return TokenStream(train, val, int(cfg.vocab_size))
    if kind == "gaussian_mixture":
        points, labels = gaussian_mixture(cfg.n_train + cfg.n_val, cfg.d_in, cfg.n_classes, seed=cfg.seed,
                                          separation=getattr(cfg, "separation", 2.0))
        return Classification((points[: cfg.n_train], labels[: cfg.n_train]),
                              (points[cfg.n_train:], labels[cfg.n_train:]), cfg.n_classes)
    if kind == "digits":
        return _digits(cfg)
    raise DataError(f"unknown data.kind={kind!r}; choose text, tokens, gaussian_mixture or digits")


def _digits(cfg: Any) -> Classification:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), shuffled with a fixed seed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise DataError("data=digits needs scikit-learn: pip install 'hptransfer[vision]'") from err
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(cfg.seed))
    images, labels = (images[order] - 0.5) / 0.5, labels[order]
    cut = int(len(labels) * (1 - cfg.val_fraction))
    return Classification((images[:cut], labels[:cut]), (images[cut:], labels[cut:]), 10)
