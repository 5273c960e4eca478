"""The usage ledger: per-minute totals in a local SQLite file, and the report.

- tally.py     per-minute deltas from consecutive Snapshots (pure: no I/O, no clock)
- store.py     the SQLite file: safe creation, schema, one transaction a minute,
               roll-ups to hours and days, retention and the size bound
- recorder.py  the writer thread a session's ticks are handed to
- report.py    `netoproc report`: totals for a period, tsv/json/pretty with bars

The ledger reads Snapshots only, never the engine, and reads no clock: minutes
are cut from the snapshots' own times.
"""
