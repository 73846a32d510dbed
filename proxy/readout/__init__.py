"""Reading the exposure log back into per-arm figures and statistics.

logreader   JSONL files or a Redis Stream into checked records
join        events joined to their exposures
tally       per route and arm counts
report      the report: CTR, lift, p-values, SRM, interleaving, shadow agreement
multileave  a multileaved arm (3+ models): both credit models, their agreement, verdicts
stats       the statistics (intervals, tests)
srm         the sample ratio mismatch test
served      how a record names what was served (long ids hashed, item_hashes)
sequential  per-unit estimates, always-valid confidence sequences
compare     the arms against the default at one point in time
verdict     better, worse, no difference or keep running, with the reason
periods     a bandit's models period by period: CTR weighted by period, SRM per period
banditview  a bandit's report as text lines, an HTML section and JSON
plan        how many units a test needs
html        the report as one self-contained page
"""

__all__ = [
    "banditview",
    "compare",
    "html",
    "join",
    "logreader",
    "multileave",
    "periods",
    "plan",
    "report",
    "sequential",
    "served",
    "srm",
    "stats",
    "tally",
    "verdict",
]
