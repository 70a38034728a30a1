"""mailcare: an e-mail-centric customer-service automation daemon."""

__version__ = "0.1.0.dev0"
