"""minidecode: a small, readable course package on how language models decode."""

__version__ = "0.1.0"
