"""Before serving: rankgate check and the probes behind rankgate init.

report     one line per check, counted
check      every check of rankgate check (config, routes, models, Redis, origin)
probe      the online probe of each feed route: would it ever re-rank?
feedshape  finding the item array and the id field in a body
initprobe  what rankgate init looks at: the items and the model
initfiles  the files rankgate init writes, rendered and validated
"""

__all__ = ["check", "feedshape", "initfiles", "initprobe", "probe", "report"]
