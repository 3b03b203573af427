"""The HTTP side of the server: one router per area (``accounts``, ``content``, ``ops``,
``history``, ``events``), included by ``server.app``, and what they share (``endpoint``:
handlers registered from ``store.protocol``; ``auth``: the caller of a request).

Handlers parse what HTTP brings (path ids, the bearer token, the body as it streams),
call the services in worker threads and shape the reply. They reach the database and the
blob store only through the services, and nothing below this package imports it.
"""
