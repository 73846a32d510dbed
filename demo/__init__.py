"""``rankgate demo``: an embedded Valkey, a catalogue origin and rankgate in front of it.

One process, one event loop: the origin app, the proxy and its admin listener; Valkey is
the only child process. See :mod:`demo.run`.
"""
