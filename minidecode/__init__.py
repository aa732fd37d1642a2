"""minidecode: a small, readable course package on how language models decode.

    model, tokenizer = minidecode.load("main")   # a shipped model, by name or path
"""

__version__ = "0.1.0"


def load(name_or_path, **kwargs):
    """Load a shipped model ("main" and its one-layer draft "main-draft"; the earlier
    names "tiny-target", "tiny-retriever" and "tiny-draft" are aliases of these) or a checkpoint
    directory.

    Returns ``(Transformer, tokenizers.Tokenizer)``; see ``minidecode.checkpoint.load``.
    """
    from minidecode.checkpoint import load as _load

    return _load(name_or_path, **kwargs)
