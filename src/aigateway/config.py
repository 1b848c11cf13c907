"""Settings of one gateway node, read and validated once at startup.

This is the only module that reads the environment and the optional TOML
configuration file (``AI_GATEWAY_CONFIG``: more providers, aliases, the default
provider; its section is at the end). ``aigateway serve`` calls
:func:`load_settings` in the main process; a bad value is a :class:`ConfigError`
(exit code 2, one line naming the variable). The validated settings reach the
Granian worker processes as one JSON document in ``AIGATEWAY_WORKER_SETTINGS``
(:func:`settings_to_worker_env` / :func:`settings_from_worker_env`), so every
worker runs with exactly what the main process validated.

A field declared with ``repr=False`` holds a secret: ``aigateway.scrub`` masks its value
in whatever the gateway relays or logs.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from aigateway.provider_specs import BUILT_IN, WIRE_FORMATS, ProviderSpec

WORKER_SETTINGS_ENV = "AIGATEWAY_WORKER_SETTINGS"

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
UPSTREAM_CLIENTS = ("aiohttp", "httpx")

# The public APIs of the built-in providers: reached only with a key.
DEFAULT_BASE_URLS = frozenset(spec.default_base_url for spec in BUILT_IN)


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names it."""

    def __init__(self, name: str, value: str, expected: str) -> None:
        super().__init__(f"invalid {name}={value!r}: expected {expected}")
        self.name = name
        self.value = value
        self.expected = expected


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """Where and how to reach one provider."""

    name: str
    base_url: str
    api_key: str | None = field(repr=False)
    max_connections: int
    rps: float
    kind: str = "openai"  # wire format: openai, gemini or anthropic
    key_variable: str = ""  # where the key comes from, for error messages
    models: tuple[str, ...] = ()  # bare model names routed here (configuration file)
    spec: ProviderSpec | None = None  # what it is, for a built-in provider
    tpm: float = 0.0  # tokens per minute (prompt + completion, as reported); 0: no limit
    responses_api: bool = False  # /v1/responses passes through (OpenAI's wire format only)

    @classmethod
    def built_in(cls, spec: ProviderSpec) -> ProviderSettings:
        """A built-in provider as its spec sets it up, before any variable is read."""
        return cls(
            spec.name,
            spec.default_base_url,
            None,
            spec.max_connections,
            spec.rps,
            spec.wire_format,
            spec.key_variable,
            spec=spec,
            responses_api=spec.responses_api,
        )

    @property
    def default_base_url(self) -> bool:
        """Whether it points at a public provider API (which answers nothing without a
        key), rather than at a server of its own."""
        own_default = self.spec is not None and self.base_url == self.spec.default_base_url
        return own_default or self.base_url in DEFAULT_BASE_URLS


@dataclass(frozen=True, slots=True)
class AliasTarget:
    """One entry of an alias: a provider/model target, with a weight for load spreading."""

    target: str
    weight: float = 0.0  # 0: a plain fallback, tried in list order


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8081
    log_level: str = "info"
    workers: int = 1
    queue_size: int = 1000
    cache_ttl_minutes: float = 30.0
    batch_size: int = 10
    batch_timeout_ms: int = 1000
    max_retries: int = 3
    initial_delay_ms: int = 1000
    max_delay_ms: int = 30000
    connection_timeout_s: float = 30.0
    request_timeout_s: float = 60.0
    max_body_bytes: int = 10 * 1024 * 1024
    # Provider answers: the largest whole answer held in memory, how far a reader of a
    # shared stream may fall behind, the largest answer cached.
    max_response_bytes: int = 32 * 1024 * 1024
    stream_max_lag_bytes: int = 1024 * 1024
    cache_max_entry_bytes: int = 1024 * 1024
    upstream_client: str = "aiohttp"
    keepalive_expiry_s: float = 15.0
    cache_enabled: bool = True
    cache_max_mb: float = 256.0
    cache_scope: str = "global"
    cache_dir: str | None = None  # where the node's cache directory goes (default /dev/shm)
    cache_ttl_factors: tuple[tuple[str, float], ...] = ()
    # Stored Responses (store: true, previous_response_id): where, how long, how much.
    responses_store_dir: str | None = None  # default: the node's directory (tmpfs)
    responses_store_days: float = 30.0
    responses_store_mb: float = 64.0
    # Set by `aigateway serve`: the node's cache directory and shared-memory segment,
    # and the directory of its stored Responses.
    cache_path: str | None = None
    responses_path: str | None = None
    signatures_path: str | None = None  # Gemini's thought signatures, node-wide
    shm_name: str | None = None
    image_fetch_max_bytes: int = 20 * 1024 * 1024
    image_fetch_timeout_s: float = 10.0
    image_fetch_allow_private: bool = False
    # The built-in providers, one per spec (provider_specs.BUILT_IN by default).
    built_in: tuple[ProviderSettings, ...] = field(
        default_factory=lambda: tuple(ProviderSettings.built_in(spec) for spec in BUILT_IN)
    )
    # From the configuration file (AI_GATEWAY_CONFIG): more providers, aliases, default.
    config_file: str | None = None
    extra_providers: tuple[ProviderSettings, ...] = ()
    aliases: tuple[tuple[str, tuple[AliasTarget, ...]], ...] = ()
    default_provider: str | None = None
    # [prices."<model>"]: (model, input, output, cached_input) USD per million tokens,
    # over the shipped table (aigateway.pricing).
    prices: tuple[tuple[str, float, float, float], ...] = ()
    # Set by `aigateway serve` when no provider key is set and it routes to the bundled mock.
    mock_provider: bool = False
    # Operations: access, CORS, request logs, provider health, shutdown (docs/operations.md).
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    admin_key: str | None = field(default=None, repr=False)
    metrics_public: bool = False
    cors_allow_origins: tuple[str, ...] = ()
    log_format: str = "text"
    health_check_interval_s: float = 30.0
    circuit_failure_threshold: int = 5
    circuit_cooldown_s: float = 30.0
    provider_pause_max_s: float = 60.0
    drain_timeout_s: float = 30.0
    # Admission: share of a provider's burst each priority leaves for more urgent ones.
    priority_reserves: tuple[tuple[str, float], ...] = ()
    # Client connections (docs/operations.md, "Slow and idle clients").
    client_header_timeout_s: float = 30.0
    client_body_timeout_s: float = 60.0
    client_max_connections: int = 10_000
    # Several nodes as one gateway (docs/cluster.md): off without a Redis URL.
    redis_url: str | None = field(default=None, repr=False)
    redis_cache_url: str | None = field(default=None, repr=False)
    redis_timeout_ms: int = 100
    redis_limits_on_failure: str = "open"
    cluster_name: str = "aigateway"
    node_id: str | None = None  # default: host name and port
    # OpenTelemetry traces (docs/observability.md): on when the standard OTEL_* variables
    # ask for an exporter (see ``tracing_wanted``); the SDK reads the rest of them itself.
    tracing: str = ""  # the exporter: otlp or console; "" for off
    propagate_trace: bool = False
    # Tenant keys (docs/operations.md, "Tenant keys"): where they are kept, how often
    # spend reaches the store, whether a stream is cut at its key's budget.
    data_dir: str | None = None  # default: $XDG_DATA_HOME/aigateway (set by `serve`)
    key_spend_flush_ms: int = 1000
    key_budget_cut_streams: bool = False

    @property
    def providers(self) -> tuple[ProviderSettings, ...]:
        return (*self.built_in, *self.extra_providers)

    @property
    def specs(self) -> tuple[ProviderSpec, ...]:
        """The specs of the built-in providers."""
        return tuple(p.spec for p in self.built_in if p.spec is not None)

    def provider(self, name: str) -> ProviderSettings:
        """The settings of provider ``name``; ``KeyError`` for an unknown one."""
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)

    def with_providers(self, changes: Mapping[str, Mapping[str, Any]]) -> Settings:
        """These settings with ``changes`` (provider name -> field -> value) applied."""

        def changed(p: ProviderSettings) -> ProviderSettings:
            return dataclasses.replace(p, **changes[p.name]) if p.name in changes else p

        return dataclasses.replace(
            self,
            built_in=tuple(map(changed, self.built_in)),
            extra_providers=tuple(map(changed, self.extra_providers)),
        )


# --- parsing helpers -------------------------------------------------------------------


def _int(lo: int, hi: int | None = None) -> Callable[[str, str], int]:
    expected = f"a whole number >= {lo}" + (f" and <= {hi}" if hi is not None else "")

    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(name, raw, expected) from None
        if value < lo or (hi is not None and value > hi):
            raise ConfigError(name, raw, expected)
        return value

    return parse


def _number(
    lo: float, *, strict: bool = False, hi: float | None = None
) -> Callable[[str, str], float]:
    bound = f"> {lo:g}" if strict else f">= {lo:g}"
    expected = f"a number {bound}" + (f" and <= {hi:g}" if hi is not None else "")

    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(name, raw, expected) from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(name, raw, expected)
        if value < lo or (strict and value == lo) or (hi is not None and value > hi):
            raise ConfigError(name, raw, expected)
        return value

    return parse


def _choice(options: tuple[str, ...]) -> Callable[[str, str], str]:
    expected = "one of " + ", ".join(options)

    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ConfigError(name, raw, expected)
        return value

    return parse


def _url(name: str, raw: str) -> str:
    """A provider's base URL. Refused with credentials, a query or a fragment: keys go in
    their own variable (a URL is shown by /health, /admin/config and error messages, and
    adapters append paths to it, so a query never worked). Errors mask those parts."""
    value = raw.strip().rstrip("/")
    shown = mask_url(value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, shown, "an http:// or https:// URL with a host")
    if shown != value:
        expected = "a URL without user:password@, ?query or #fragment (a key goes in its variable)"
        raise ConfigError(name, shown, expected)
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError(name, shown, "an http:// or https:// URL with a valid port") from None
    return value


def mask_url(value: str) -> str:
    """``value`` with what may hold a secret hidden: user:password@ (everything before the
    last ``@``: an unescaped password may hold ``/``, ``?`` or ``#``), ?query and #fragment.
    It errs on the side of hiding: an ``@`` in a query hides what comes before it too."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "", value
    _userinfo, at, rest = rest.rpartition("@")
    mark = min((i for i in map(rest.find, "?#") if i >= 0), default=-1)
    front, tail = (rest[:mark], rest[mark] + "****") if mark >= 0 else (rest, "")
    return scheme + sep + ("****@" if at else "") + front + tail


REDIS_SCHEMES = (
    "redis", "rediss", "unix",
    "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel",
)  # fmt: skip


def _redis_url(name: str, raw: str) -> str | None:
    """A Redis (or Valkey) URL; the scheme picks a single server (redis, rediss with TLS,
    unix), a cluster (redis+cluster: any of its nodes) or Sentinel (redis+sentinel:
    host:port,... of the sentinels, then /service). Errors never show a password."""
    value = raw.strip()
    if not value:
        return None
    shown = mask_url(value)
    scheme, sep, rest = value.partition("://")
    expected = "a URL starting " + ", ".join(f"{s}://" for s in REDIS_SCHEMES)
    if not sep or scheme.lower() not in REDIS_SCHEMES or not rest:
        raise ConfigError(name, shown, expected)
    if scheme.lower().endswith("sentinel") and not urlsplit(value).path.strip("/"):
        raise ConfigError(name, shown, "a Sentinel URL naming its service: .../<service>")
    return value


def _name(name: str, raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > 64 or not all(c.isalnum() or c in "-_.:" for c in value):
        raise ConfigError(name, raw, "1 to 64 letters, digits, '-', '_', '.' or ':'")
    return value


def _host(name: str, raw: str) -> str:
    value = raw.strip()
    if not value or any(c.isspace() for c in value) or "/" in value:
        raise ConfigError(name, raw, "a host name or IP address to bind to")
    return value


def _path(name: str, raw: str) -> str:
    value = raw.strip()
    if not os.path.isfile(value):
        raise ConfigError(name, raw, "the path of a readable TOML file")
    return value


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, raw, "true or false")


def _directory(name: str, raw: str) -> str:
    value = raw.strip()
    if not os.path.isdir(value) or not os.access(value, os.W_OK):
        raise ConfigError(name, raw, "a writable directory")
    return value


def _data_directory(name: str, raw: str) -> str:
    """A directory that may not exist yet (``aigateway serve`` makes it, exit 2 if it
    cannot be written)."""
    value = os.path.expanduser(raw.strip())
    if not value or "\x00" in value:
        raise ConfigError(name, raw, "a directory path")
    return os.path.abspath(value)


def _factors(name: str, raw: str) -> tuple[tuple[str, float], ...]:
    expected = "provider=factor pairs separated by commas, e.g. google=0.5,openai=2"
    pairs = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        provider, eq, factor = item.partition("=")
        try:
            value = float(factor)
        except ValueError:
            raise ConfigError(name, raw, expected) from None
        if not eq or not provider.strip() or not 0 <= value < float("inf"):
            raise ConfigError(name, raw, expected)
        pairs.append((provider.strip(), value))
    return tuple(pairs)


def _secret(name: str, raw: str) -> str | None:
    value = raw.strip()
    return value or None


def _key_list(name: str, raw: str) -> tuple[str, ...]:
    """Client API keys: a comma-separated list, or ``@path`` of a file (one key a line or
    commas; blank lines and ``#`` comments ignored).  Errors never show a key."""
    value = raw.strip()
    shown = value if value.startswith("@") else "(hidden)"
    expected = "a comma-separated list of keys, or @path of a file of keys"
    text = value
    if value.startswith("@"):
        try:
            with open(value[1:], encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(name, shown, f"{expected} (cannot read it: {exc})") from None
        lines = (line.split("#", 1)[0] for line in text.splitlines())
        text = ",".join(lines)
    keys = tuple(dict.fromkeys(key.strip() for key in text.split(",") if key.strip()))
    if not keys:
        raise ConfigError(name, shown, f"{expected}, with at least one key")
    if any(any(c.isspace() or not c.isprintable() for c in key) for key in keys):
        raise ConfigError(name, shown, f"{expected}; keys without spaces or control characters")
    return keys


def _reserves(name: str, raw: str) -> tuple[tuple[str, float], ...]:
    expected = "priority=share pairs (critical, high, normal, low; shares from 0 to 0.9)"
    pairs = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        priority, eq, share = item.partition("=")
        try:
            value = float(share)
        except ValueError:
            raise ConfigError(name, raw, expected) from None
        priority = priority.strip().lower()
        if not eq or priority not in ("critical", "high", "normal", "low"):
            raise ConfigError(name, raw, expected)
        if not 0.0 <= value <= 0.9:
            raise ConfigError(name, raw, expected)
        pairs.append((priority, value))
    return tuple(pairs)


def _origins(name: str, raw: str) -> tuple[str, ...]:
    expected = "origins separated by commas, like https://app.example.com, or *"
    origins = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        if item == "*":
            origins.append(item)
            continue
        parts = urlsplit(item)
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise ConfigError(name, raw, expected) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(name, raw, expected)
        if parts.path or parts.query or parts.fragment or parts.username:
            raise ConfigError(name, raw, expected + " (scheme, host and port only)")
        origins.append(f"{parts.scheme}://{parts.netloc.lower()}")
    return tuple(dict.fromkeys(origins))


# One row per environment variable: (variable, settings path, parser, help text); the
# path of a provider's variable is "<provider>.<field>".
Variable = tuple[str, str, Callable[[str, str], Any], str]

# Defaults live on the dataclasses above; the tables drive parsing, `aigateway config`
# and the `--help` text of `aigateway serve`. The node's variables come first, then four
# per built-in provider, then those of operations (see `variables`).
_NODE_VARIABLES: tuple[Variable, ...] = (
    ("AI_GATEWAY_HOST", "host", _host, "address to listen on"),
    ("AI_GATEWAY_PORT", "port", _int(1, 65535), "port to listen on"),
    ("LOG_LEVEL", "log_level", _choice(LOG_LEVELS), "log level"),
    ("MAX_WORKERS", "workers", _int(1, 256), "worker processes (default: number of CPUs)"),
    ("QUEUE_SIZE", "queue_size", _int(1), "requests allowed to wait on the node"),
    ("CACHE_TTL_MINUTES", "cache_ttl_minutes", _number(0), "default cache TTL in minutes"),
    ("BATCH_SIZE", "batch_size", _int(1, 2048), "inputs per coalesced embedding batch"),
    ("BATCH_TIMEOUT_MS", "batch_timeout_ms", _int(0), "longest wait to fill a batch"),
    ("MAX_RETRIES", "max_retries", _int(0, 20), "retries of a failed provider call"),
    ("INITIAL_DELAY_MS", "initial_delay_ms", _int(0), "first backoff delay"),
    ("MAX_DELAY_MS", "max_delay_ms", _int(0), "longest backoff delay"),
    (
        "CONNECTION_TIMEOUT_SEC",
        "connection_timeout_s",
        _number(0, strict=True),
        "timeout to open a provider connection",
    ),
    (
        "REQUEST_TIMEOUT_SEC",
        "request_timeout_s",
        _number(0, strict=True),
        "deadline of one client request, every retry included",
    ),
    ("AI_GATEWAY_CONFIG", "config_file", _path, "TOML file: more providers, aliases, routing"),
    ("MAX_BODY_BYTES", "max_body_bytes", _int(1), "largest request body accepted (413 past it)"),
    (
        "MAX_RESPONSE_BYTES",
        "max_response_bytes",
        _int(1024),
        "largest whole provider answer accepted (502 past it)",
    ),
    (
        "STREAM_MAX_LAG_BYTES",
        "stream_max_lag_bytes",
        _int(1024),
        "how far a reader of a shared stream may fall behind before it is dropped",
    ),
    (
        "CACHE_MAX_ENTRY_BYTES",
        "cache_max_entry_bytes",
        _int(1024),
        "largest answer the cache keeps (a longer one is served, not stored)",
    ),
    ("UPSTREAM_CLIENT", "upstream_client", _choice(UPSTREAM_CLIENTS), "provider HTTP client"),
    (
        "UPSTREAM_KEEPALIVE_SEC",
        "keepalive_expiry_s",
        _number(0, strict=True),
        "idle provider connections are closed after this many seconds",
    ),
    ("CACHE_ENABLED", "cache_enabled", _bool, "cache responses for the whole node"),
    ("CACHE_MAX_MB", "cache_max_mb", _number(0, strict=True), "response cache memory budget"),
    (
        "CACHE_SCOPE",
        "cache_scope",
        _choice(("global", "key")),
        "global: one cache for all clients; key: one per client API key",
    ),
    ("CACHE_DIR", "cache_dir", _directory, "where the cache lives (default /dev/shm, tmpfs)"),
    (
        "RESPONSES_STORE_DIR",
        "responses_store_dir",
        _directory,
        "where stored Responses live (default: the node's directory, gone at stop)",
    ),
    (
        "RESPONSES_STORE_DAYS",
        "responses_store_days",
        _number(0, strict=True),
        "how long a stored Response (previous_response_id) is kept",
    ),
    (
        "RESPONSES_STORE_MB",
        "responses_store_mb",
        _number(0, strict=True),
        "size budget of stored Responses (the oldest go first past it)",
    ),
    (
        "CACHE_PROVIDER_TTL_FACTORS",
        "cache_ttl_factors",
        _factors,
        "per-provider TTL factors, e.g. google=0.5,openai=2",
    ),
    (
        "IMAGE_FETCH_MAX_BYTES",
        "image_fetch_max_bytes",
        _int(1),
        "largest total of remote images fetched for one request (Gemini)",
    ),
    (
        "IMAGE_FETCH_TIMEOUT_SEC",
        "image_fetch_timeout_s",
        _number(0, strict=True),
        "timeout to fetch remote images",
    ),
    (
        "IMAGE_FETCH_ALLOW_PRIVATE",
        "image_fetch_allow_private",
        _bool,
        "allow image URLs on loopback/private networks",
    ),
)

_OPERATIONS_VARIABLES: tuple[Variable, ...] = (
    ("AI_GATEWAY_API_KEYS", "api_keys", _key_list, "client keys for /v1/* (list or @file)"),
    ("AI_GATEWAY_ADMIN_KEY", "admin_key", _secret, "key for /admin/* (else loopback only)"),
    ("METRICS_PUBLIC", "metrics_public", _bool, "serve /metrics without the admin rule"),
    ("CORS_ALLOW_ORIGINS", "cors_allow_origins", _origins, "browser origins allowed (CORS)"),
    ("LOG_FORMAT", "log_format", _choice(("text", "json")), "log lines as text or JSON"),
    (
        "HEALTH_CHECK_INTERVAL_SEC",
        "health_check_interval_s",
        _number(0),
        "active probe of each provider (0: only to close an open circuit)",
    ),
    (
        "CIRCUIT_FAILURE_THRESHOLD",
        "circuit_failure_threshold",
        _int(0, 1000),
        "consecutive failed calls that open a provider's circuit (0: never)",
    ),
    (
        "CIRCUIT_COOLDOWN_SEC",
        "circuit_cooldown_s",
        _number(0, strict=True),
        "how long an open circuit waits before its provider is probed again",
    ),
    (
        "PROVIDER_PAUSE_MAX_SEC",
        "provider_pause_max_s",
        _number(0, hi=3600),
        "longest wait a provider's retry-after imposes (node pause, client Retry-After)",
    ),
    (
        "DRAIN_TIMEOUT_SEC",
        "drain_timeout_s",
        _number(0, strict=True),
        "on SIGTERM, how long in-flight requests may take to finish",
    ),
    (
        "CLIENT_HEADER_TIMEOUT_SEC",
        "client_header_timeout_s",
        _number(0, strict=True, hi=3600),
        "a client connection must send a whole request head this soon after it opens or "
        "after its previous answer (so also the keep-alive idle timeout)",
    ),
    (
        "CLIENT_BODY_TIMEOUT_SEC",
        "client_body_timeout_s",
        _number(0, strict=True, hi=3600),
        "a request's whole body must arrive this soon after its head (408 past it)",
    ),
    (
        "CLIENT_MAX_CONNECTIONS",
        "client_max_connections",
        _int(16, 1_000_000),
        "client connections one worker holds at most; more wait in the listen backlog",
    ),
    (
        "PRIORITY_RESERVES",
        "priority_reserves",
        _reserves,
        "share of a provider's burst left to more urgent requests, e.g. low=0.5,normal=0.25",
    ),
)

# Several nodes as one gateway through Redis or Valkey (docs/cluster.md).
_CLUSTER_VARIABLES: tuple[Variable, ...] = (
    ("REDIS_URL", "redis_url", _redis_url, "Redis/Valkey shared by the nodes (unset: one node)"),
    (
        "REDIS_CACHE_URL",
        "redis_cache_url",
        _redis_url,
        "a separate Redis for the shared cache (default: REDIS_URL)",
    ),
    (
        "REDIS_TIMEOUT_MS",
        "redis_timeout_ms",
        _int(1, 10_000),
        "longest wait for one Redis call; past it the node goes on alone",
    ),
    (
        "REDIS_LIMITS_ON_FAILURE",
        "redis_limits_on_failure",
        _choice(("open", "closed")),
        "Redis gone: open (limit / last live nodes) or closed (503)",
    ),
    ("CLUSTER_NAME", "cluster_name", _name, "the gateway's name in Redis (several may share one)"),
    ("AI_GATEWAY_NODE_ID", "node_id", _name, "this node's name (default: host name:port)"),
)


# Traces: the standard OTEL_* variables are the SDK's; this one is the gateway's own.
_TRACING_VARIABLES: tuple[Variable, ...] = (
    (
        "OTEL_PROPAGATE_TO_PROVIDERS",
        "propagate_trace",
        _bool,
        "send the request's W3C traceparent to providers (tracing on)",
    ),
)


# Tenant keys (docs/operations.md, "Tenant keys").
_KEY_VARIABLES: tuple[Variable, ...] = (
    (
        "AI_GATEWAY_DATA_DIR",
        "data_dir",
        _data_directory,
        "where tenant keys and their spend are kept (default $XDG_DATA_HOME/aigateway)",
    ),
    (
        "KEY_SPEND_FLUSH_MS",
        "key_spend_flush_ms",
        _int(10, 60_000),
        "how often each worker writes tenant key spend to the store (kill -9 loses one)",
    ),
    (
        "KEY_BUDGET_CUT_STREAMS",
        "key_budget_cut_streams",
        _bool,
        "cut a stream whose running cost takes its key past its budget",
    ),
)


def provider_variables(spec: ProviderSpec) -> tuple[Variable, ...]:
    """The variables of a built-in provider: key, base URL, connections, rate, tokens."""
    name, label = spec.name, spec.label
    return (
        (spec.key_variable, f"{name}.api_key", _secret, f"{spec.key_label or label} API key"),
        (spec.base_url_variable, f"{name}.base_url", _url, f"{label} API base URL"),
        (
            spec.max_connections_variable,
            f"{name}.max_connections",
            _int(1, 10000),
            f"pooled connections to {label} per worker",
        ),
        (
            spec.rps_variable,
            f"{name}.rps",
            _number(0, strict=True),
            f"{label} requests per second (node)",
        ),
        (
            spec.tpm_variable,
            f"{name}.tpm",
            _number(0),
            f"{label} tokens per minute (0: no token limit)",
        ),
    )


def variables(specs: tuple[ProviderSpec, ...] = BUILT_IN) -> tuple[Variable, ...]:
    """Every variable of a gateway whose built-in providers are ``specs``."""
    providers = (row for spec in specs for row in provider_variables(spec))
    return (
        *_NODE_VARIABLES,
        *providers,
        *_OPERATIONS_VARIABLES,
        *_CLUSTER_VARIABLES,
        *_TRACING_VARIABLES,
        *_KEY_VARIABLES,
    )


VARIABLES: Final = variables(BUILT_IN)


def _is_secret(parse: Callable[[str, str], Any]) -> bool:
    return parse is _secret or parse is _key_list


def _is_url_with_secret(parse: Callable[[str, str], Any]) -> bool:
    return parse is _redis_url


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    specs: tuple[ProviderSpec, ...] = BUILT_IN,
    **overrides: Any,
) -> Settings:
    """Settings from the environment; ``overrides`` (from command-line flags) win.
    ``specs`` are the built-in providers (tests give a table of their own).

    Raises :class:`ConfigError` for the first value that cannot be used.
    """
    env = os.environ if environ is None else environ
    top: dict[str, Any] = {"workers": os.cpu_count() or 1}
    nested: dict[str, dict[str, Any]] = {spec.name: {} for spec in specs}
    for name, path, parse, _ in variables(specs):
        raw = env.get(name)
        if raw is None or (raw.strip() == "" and parse is not _secret):
            continue
        value = parse(name, raw)
        if "." in path:
            provider, attr = path.split(".", 1)
            nested[provider][attr] = value
        else:
            top[path] = value
    top["tracing"] = tracing_wanted(env)
    top.update({k: v for k, v in overrides.items() if v is not None})
    top["built_in"] = tuple(
        dataclasses.replace(ProviderSettings.built_in(spec), **nested[spec.name]) for spec in specs
    )
    settings = Settings(**top)
    if settings.config_file is not None:
        settings = apply_config_file(settings, settings.config_file, env)
    if settings.max_delay_ms < settings.initial_delay_ms:
        raise ConfigError(
            "MAX_DELAY_MS",
            str(settings.max_delay_ms),
            f"a value >= INITIAL_DELAY_MS ({settings.initial_delay_ms})",
        )
    return settings


class MissingExtra(ConfigError):
    """A setting that needs an optional extra that is not installed."""

    def __init__(self, name: str, value: str, extra: str, what: str) -> None:
        super().__init__(name, value, f"the {extra} extra")
        install = f"pip install 'aigateway[{extra}]'"
        self.args = (f"{name} is set but {what} is not installed: {install}",)


_OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_EXPORTERS = ("otlp", "console")


# What the ``otel`` extra installs, as the modules ``aigateway.tracing`` imports from it.
_OTEL_MODULES = (
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
)


def _missing(modules: tuple[str, ...]) -> bool:
    """Whether one of ``modules`` is not installed (looked up, not imported)."""
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return True
        except (ImportError, ValueError):  # a parent package missing or hidden
            return True
    return False


def tracing_wanted(env: Mapping[str, str]) -> str:
    """The exporter of traces the standard variables ask for ("" for none): ``otlp`` for
    an OTLP endpoint, or ``OTEL_TRACES_EXPORTER`` (otlp or console; ``none`` and
    ``OTEL_SDK_DISABLED=true`` turn it off).  OTLP goes over HTTP, the exporter the ``otel``
    extra ships."""
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = next((name for name in _OTLP_ENDPOINTS if env.get(name, "").strip()), None)
    if exporter == "none" or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ""
    if not exporter and endpoint is None:
        return ""
    if exporter and exporter not in _EXPORTERS:
        raise ConfigError("OTEL_TRACES_EXPORTER", exporter, "otlp, console or none")
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(name, "").strip()
        if protocol and protocol != "http/protobuf":
            raise ConfigError(name, protocol, "http/protobuf (the exporter aigateway[otel] ships)")
    if _missing(_OTEL_MODULES):
        name = endpoint or "OTEL_TRACES_EXPORTER"
        raise MissingExtra(name, env.get(name, ""), "otel", "OpenTelemetry")
    return exporter or "otlp"


def mask_secret(value: str | None) -> str:
    if not value:
        return "(not set)"
    return "****" + value[-4:] if len(value) >= 16 else "****"


def describe(settings: Settings) -> list[tuple[str, str]]:
    """(variable, effective value) pairs for display, every secret masked."""
    rows = []
    for name, path, parse, _ in variables(settings.specs):
        provider, _, attribute = path.rpartition(".")
        value = getattr(settings.provider(provider) if provider else settings, attribute)
        if isinstance(value, tuple) and _is_secret(parse):
            shown = f"({len(value)} keys)" if value else "(not set)"
        elif isinstance(value, tuple) and all(isinstance(item, str) for item in value):
            shown = ",".join(value)
        else:
            shown = mask_secret(value) if _is_secret(parse) else f"{value}"
            if _is_url_with_secret(parse):
                shown = mask_url(value) if value else "(not set)"
        rows.append((name, shown))
    return rows


def settings_to_worker_env(settings: Settings) -> str:
    return orjson.dumps(dataclasses.asdict(settings)).decode()


def settings_from_worker_env(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings the main process validated; plain defaults when run outside it."""
    env = os.environ if environ is None else environ
    raw = env.get(WORKER_SETTINGS_ENV)
    if raw is None:
        return load_settings(env)
    data = orjson.loads(raw)
    data["built_in"] = tuple(_provider_from_json(p) for p in data["built_in"])
    data["extra_providers"] = tuple(_provider_from_json(p) for p in data["extra_providers"])
    data["cache_ttl_factors"] = tuple(tuple(pair) for pair in data["cache_ttl_factors"])
    data["api_keys"] = tuple(data["api_keys"])
    data["priority_reserves"] = tuple(tuple(pair) for pair in data["priority_reserves"])
    data["cors_allow_origins"] = tuple(data["cors_allow_origins"])
    data["prices"] = tuple(tuple(entry) for entry in data["prices"])
    data["aliases"] = tuple(
        (name, tuple(AliasTarget(**entry) for entry in entries))
        for name, entries in data["aliases"]
    )
    return Settings(**data)


def _provider_from_json(data: dict[str, Any]) -> ProviderSettings:
    spec = data["spec"]
    if spec is not None:
        spec = ProviderSpec(**{**spec, "families": tuple(spec["families"])})
    return ProviderSettings(**{**data, "models": tuple(data["models"]), "spec": spec})


# --- the configuration file (AI_GATEWAY_CONFIG) ------------------------------------------
# More providers, aliases and the default provider (docs/configuration.md shows one),
# validated by the same rule as the environment: the first bad value is a ConfigError
# naming the file and the key.

TOP_LEVEL_KEYS = {"default_provider", "providers", "aliases", "prices"}
PROVIDER_KEYS = {
    "type", "base_url", "api_key_env", "max_connections", "rps", "tpm", "models", "responses_api"
}  # fmt: skip
PRICE_KEYS = {"input", "output", "cached_input"}


def apply_config_file(settings: Settings, path: str, env: Mapping[str, str]) -> Settings:
    """``settings`` with what the TOML file at ``path`` adds (``env`` holds its keys)."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("AI_GATEWAY_CONFIG", path, f"a readable TOML file ({exc})") from None
    where = f"{path}:"
    _no_unknown_keys(where, data, TOP_LEVEL_KEYS)
    built_in = {p.name for p in settings.built_in}
    extra = tuple(
        _provider(f"{where} providers.{name}", name, table, env, built_in)
        for name, table in _table(where, data, "providers").items()
    )
    known = built_in | {p.name for p in extra}
    aliases = tuple(
        (name, _alias(f"{where} aliases.{name}", name, entries, known))
        for name, entries in _table(where, data, "aliases").items()
    )
    default = data.get("default_provider")
    if default is not None and default not in known:
        expected = "the name of a provider: " + ", ".join(sorted(known))
        raise ConfigError(f"{where} default_provider", str(default), expected)
    prices = tuple(
        _price(f'{where} prices."{model}"', model, table)
        for model, table in _table(where, data, "prices").items()
    )
    return dataclasses.replace(
        settings, extra_providers=extra, aliases=aliases, default_provider=default, prices=prices
    )


def _table(where: str, data: dict[str, Any], key: str) -> dict[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where} {key}", repr(table), "a table")
    return table


def _no_unknown_keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where} {key}", "", "one of the keys " + ", ".join(sorted(allowed)))


def _provider(
    where: str, name: str, table: Any, env: Mapping[str, str], built_in: Collection[str]
) -> ProviderSettings:
    if name in built_in:
        raise ConfigError(
            where, name, "a new provider name (built-in providers are set by environment)"
        )
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(where, name, "a name of letters, digits, '-' and '_'")
    if not isinstance(table, dict):
        raise ConfigError(where, repr(table), "a table")
    _no_unknown_keys(where, table, PROVIDER_KEYS)
    kind = table.get("type", "openai")
    if kind not in WIRE_FORMATS:
        raise ConfigError(f"{where}.type", str(kind), "one of " + ", ".join(WIRE_FORMATS))
    if "base_url" not in table:
        raise ConfigError(f"{where}.base_url", "", "the provider's base URL")
    base_url = _url(f"{where}.base_url", str(table["base_url"]))
    key_variable = str(table.get("api_key_env", ""))
    api_key = ((env.get(key_variable) or "").strip() or None) if key_variable else None
    raw_connections = str(table.get("max_connections", 20))
    max_connections = _int(1, 10000)(f"{where}.max_connections", raw_connections)
    rps = _number(0, strict=True)(f"{where}.rps", str(table.get("rps", 50)))
    tpm = _number(0)(f"{where}.tpm", str(table.get("tpm", 0)))
    models = table.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise ConfigError(f"{where}.models", repr(models), "a list of model names")
    responses_api = table.get("responses_api", False)
    if not isinstance(responses_api, bool) or (responses_api and kind != "openai"):
        expected = 'true or false (true only for type = "openai")'
        raise ConfigError(f"{where}.responses_api", repr(responses_api), expected)
    return ProviderSettings(
        name, base_url, api_key, max_connections, rps, kind, key_variable, tuple(models), tpm=tpm,
        responses_api=responses_api,
    )  # fmt: skip


def _price(where: str, model: str, table: Any) -> tuple[str, float, float, float]:
    """One model's prices, USD per million tokens; ``cached_input`` defaults to ``input``."""
    if not model:
        raise ConfigError(where, model, "a model name")
    if not isinstance(table, dict):
        raise ConfigError(where, repr(table), "a table of input, output and cached_input")
    _no_unknown_keys(where, table, PRICE_KEYS)
    figures = []
    for key in ("input", "output", "cached_input"):
        value = table.get(key, table.get("input") if key == "cached_input" else None)
        if value is None:
            raise ConfigError(f"{where}.{key}", "", "USD per million tokens (a number >= 0)")
        valid = isinstance(value, int | float) and not isinstance(value, bool)
        if not valid or not 0 <= value < float("inf"):
            raise ConfigError(
                f"{where}.{key}", repr(value), "USD per million tokens (a number >= 0)"
            )
        figures.append(float(value))
    return model, figures[0], figures[1], figures[2]


def _alias(where: str, name: str, entries: Any, known: set[str]) -> tuple[AliasTarget, ...]:
    if "/" in name:
        raise ConfigError(where, name, "an alias name without '/'")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(where, repr(entries), "a non-empty list of 'provider/model' targets")
    targets = []
    for i, entry in enumerate(entries):
        spot = f"{where}[{i}]"
        weight: Any = 0.0
        if isinstance(entry, dict):
            target, weight = entry.get("target"), entry.get("weight", 1.0)
        else:
            target = entry
        if not isinstance(target, str) or target.partition("/")[0] not in known:
            expected = "'provider/model' with a provider among " + ", ".join(sorted(known))
            raise ConfigError(spot, repr(target), expected)
        if not target.partition("/")[2]:
            raise ConfigError(spot, target, "'provider/model' with a model after the '/'")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ConfigError(f"{spot}.weight", repr(weight), "a number >= 0")
        targets.append(AliasTarget(target, float(weight)))
    return tuple(targets)
