"""Reading the exposure log back into per-arm figures and statistics.

    logreader  JSONL files or a Redis Stream into checked records
    join       events joined to their exposures
    tally      per route and arm counts
    report     the report: CTR, lift, p-values, SRM, interleaving, shadow agreement
    stats      the statistics (intervals, tests)
    srm        the sample ratio mismatch test
"""

__all__ = ["join", "logreader", "report", "srm", "stats", "tally"]
