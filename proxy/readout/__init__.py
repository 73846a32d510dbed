"""Reading the exposure log back into per-arm figures and statistics.

    logreader  JSONL files or a Redis Stream into checked records
    join       events joined to their exposures
    tally      per route and arm counts
    report     the report: CTR, lift, p-values, SRM, interleaving, shadow agreement
    stats      the statistics (intervals, tests)
    srm        the sample ratio mismatch test
    served     how a record names what was served (long ids hashed, item_hashes)
"""

__all__ = ["join", "logreader", "report", "served", "srm", "stats", "tally"]
