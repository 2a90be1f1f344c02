"""mailca: a private CA and TLS lifecycle tool for self-hosted mail servers."""

__version__ = "0.1.0"
