"""Mock LLM provider speaking OpenAI's, Anthropic's and Gemini's REST wire formats, for tests,
demos and load benchmarks.

Run it with ``python -m aigateway.testing.mock_provider [options]`` (or ``aigateway
mock-upstream``). Once listening it prints exactly one line to stdout: ``mock provider listening
on http://HOST:PORT``. One server answers all three formats; the base URLs are:

* OpenAI ``http://HOST:PORT/v1``: ``POST /chat/completions`` (also ``stream: true``),
  ``POST /embeddings``, ``GET /models``, ``GET /models/{id}``
  (see :mod:`aigateway.testing.mock_replies`);
* Anthropic ``http://HOST:PORT/anthropic/v1``: ``POST /messages`` (also ``stream: true``, with
  ``event:`` lines and a ping), ``GET /models``, ``GET /models/{id}``
  (see :mod:`aigateway.testing.mock_anthropic`);
* Gemini ``http://HOST:PORT/gemini/v1beta``: ``POST /models/{model}:generateContent``,
  ``:streamGenerateContent?alt=sse`` (CRLF-framed), ``:embedContent``, ``:batchEmbedContents``,
  ``GET /models``, ``GET /models/{model}`` (see :mod:`aigateway.testing.mock_gemini`).

All three give the same deterministic reply text, tool-call rule and token counts for the same
conversation; any other path under a base URL answers 404 in that format.

Control API (never requires the API key; never counted):

* ``GET /_mock/stats`` -> ``{"calls", "by_path", "last_requests"}`` (last 50, oldest first)
* ``POST /_mock/reset`` -> zero counters, forget requests and all faults (queue and default)
* ``POST /_mock/faults`` with ``{"next": [fault, ...], "default": fault | null}``;
  ``GET /_mock/faults`` shows the current queue and default.

A fault (see :mod:`aigateway.testing.mock_faults`) can also be given per request, in an
``x-mock-fault: <json>`` header or a body field ``"metadata": {"mock_fault": "<json>"}``; a
per-request fault wins over the queue and does not consume it. A fault's error answer comes in
the format of the endpoint called (see :mod:`aigateway.testing.mock_errors`).

With ``--workers N`` the processes share the port via SO_REUSEPORT; stats, faults and reset are
then per process (whichever process takes the connection).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aigateway.testing.mock_app import MockOptions, create_mock_app
from aigateway.testing.mock_server import serve, serve_workers

__all__ = ["MockOptions", "add_mock_arguments", "create_mock_app", "main", "run_mock_provider"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535, got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_mock_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the mock provider's command-line options to ``parser``."""
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default: {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port to listen on; 0 picks a free port, shown in the ready line "
        f"(default: {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="number of server processes sharing the port via SO_REUSEPORT, for benchmarks; "
        "stats, faults and reset are then per process (default: 1)",
    )
    parser.add_argument(
        "--latency-ms",
        type=_non_negative_float,
        default=0.0,
        metavar="MS",
        help="wait this many milliseconds before every provider answer (default: 0)",
    )
    parser.add_argument(
        "--stream-chunk-delay-ms",
        type=_non_negative_float,
        default=0.0,
        metavar="MS",
        help="wait this many milliseconds between the events of a streamed reply (default: 0)",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="require KEY the way each format sends it ('Authorization: Bearer KEY' on /v1, "
        "'x-api-key' on /anthropic, 'x-goog-api-key' or ?key= on /gemini), else answer like "
        "that provider does (default: accept any or no key)",
    )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def run_mock_provider(args: argparse.Namespace) -> int:
    """Run the mock provider (options from :func:`add_mock_arguments`) until SIGTERM/SIGINT.

    Prints ``mock provider listening on http://HOST:PORT`` once listening; returns the exit code.
    """
    options = MockOptions(
        latency_ms=args.latency_ms,
        stream_chunk_delay_ms=args.stream_chunk_delay_ms,
        api_key=args.api_key or None,
    )
    host: str = args.host

    def announce(port: int) -> None:
        sys.stdout.write(f"mock provider listening on http://{_url_host(host)}:{port}\n")
        sys.stdout.flush()

    try:
        if args.workers > 1:
            return serve_workers(options, host, args.port, args.workers, announce)
        serve(options, host, args.port, announce)
    except OSError as exc:
        sys.stderr.write(f"mock provider: cannot listen on {host}:{args.port}: {exc}\n")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m aigateway.testing.mock_provider [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m aigateway.testing.mock_provider",
        description="Mock LLM provider speaking OpenAI's, Anthropic's and Gemini's REST wire "
        "formats (base URLs: /v1, /anthropic/v1, /gemini/v1beta).",
    )
    add_mock_arguments(parser)
    return run_mock_provider(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
