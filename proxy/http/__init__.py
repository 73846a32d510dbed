"""Faithful HTTP: forwarding to the origin and back, byte for byte, within limits.

forward        the pass-through: request upstream, response streamed back
headers        hop-by-hop removal, X-Forwarded-*, the headers rankgate adds
codec          content-encodings of feed bodies (gzip, deflate, br)
pool           the origin connection pool
client         aiohttp's request to the origin, its header steps copied once
target         request targets (RFC 9112 3.2): origin-, absolute-, authority- and
               asterisk-form
upload         request bodies on their way upstream (100-continue, bounded reads)
informational  1xx responses relayed
limits         the public server: connection cap, header/body/send/keep-alive timeouts
"""

__all__ = [
    "client",
    "codec",
    "forward",
    "headers",
    "informational",
    "limits",
    "pool",
    "target",
    "upload",
]
