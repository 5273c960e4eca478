"""netoproc: per-process, per-connection network traffic monitor with a DNS observatory."""

__version__ = "0.1.0"
