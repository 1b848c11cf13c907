"""Pure ASGI middleware of the gateway, outermost first: request id, metrics and request
log (``requests``), CORS (``cors``), authentication (``auth``)."""
