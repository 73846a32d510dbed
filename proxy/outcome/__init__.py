"""What happened to a request, in one vocabulary for every layer above.

errors  the reasons a request was not re-ranked (Reason) and the one error tree
        (RankgateError)
ending  how a request ends off the normal path: the client left, the origin broke off,
        rankgate answered
record  RequestRecord: what the request path filled in, read by observers after the
        response
"""

__all__ = ["ending", "errors", "record"]
