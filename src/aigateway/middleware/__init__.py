"""Pure ASGI middleware of the gateway, outermost first: request id, metrics and request
log (``requests``), CORS (``cors``), authentication (``auth``), the request body's
deadline (``body_timeout``), an unexpected exception as a clean 500 (``errors``)."""
