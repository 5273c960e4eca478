"""Sans-io aggregation: packets and socket tables in, frozen Snapshots out."""

from netoproc.engine.engine import Engine

__all__ = ["Engine"]
