"""Built-in datasets that need no download: text shipped with Python, and synthetic classification."""

from .synthetic import gaussian_mixture
from .text import CharTokenizer, builtin_text, text_batch

__all__ = ["CharTokenizer", "builtin_text", "gaussian_mixture", "text_batch"]
