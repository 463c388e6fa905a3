"""Built-in datasets that need no download: text shipped with Python, and synthetic classification."""

from .datasets import Classification, DataError, TokenStream, load_data
from .synthetic import gaussian_mixture
from .text import CharTokenizer, builtin_text, text_batch

__all__ = ["CharTokenizer", "Classification", "DataError", "TokenStream", "builtin_text", "gaussian_mixture",
           "load_data", "text_batch"]
