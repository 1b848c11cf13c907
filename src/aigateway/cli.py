"""The `aigateway` command: serve, mock-upstream, bench, cluster-demo, config."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import orjson

from aigateway import __version__
from aigateway.config import ConfigError, describe, load_settings, variables
from aigateway.provider_specs import BUILT_IN, ProviderSpec


def _env_help(specs: tuple[ProviderSpec, ...]) -> str:
    defaults = dict(describe(load_settings({}, specs=specs)))
    lines = ["environment variables (flags win over them):"]
    for name, _, _, text in variables(specs):
        default = defaults[name]
        if name == "MAX_WORKERS":
            default = "number of CPUs"
        lines.append(f"  {name:<24} {text} [default: {default}]")
    return "\n".join(lines)


def _mock_help(specs: tuple[ProviderSpec, ...]) -> str:
    keys = ", ".join(spec.key_variable for spec in specs)
    return (
        f"With no provider key set ({keys}) and every base URL at its default, the bundled "
        "mock provider is started and used."
    )


def build_parser(specs: tuple[ProviderSpec, ...] = BUILT_IN) -> argparse.ArgumentParser:
    """The command line; ``specs`` are the built-in providers whose variables it lists."""
    parser = argparse.ArgumentParser(
        prog="aigateway", description="High-throughput AI gateway in front of LLM providers."
    )
    parser.add_argument("--version", action="version", version=f"aigateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway on Granian worker processes. " + _mock_help(specs),
        epilog=_env_help(specs),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", help="address to listen on (AI_GATEWAY_HOST)")
    serve.add_argument("--port", help="port to listen on (AI_GATEWAY_PORT)")
    serve.add_argument("--workers", help="worker processes (MAX_WORKERS)")
    serve.add_argument("--log-level", help="debug, info, warning, error (LOG_LEVEL)")
    serve.add_argument("--upstream-client", help="aiohttp or httpx (UPSTREAM_CLIENT)")

    mock = commands.add_parser(
        "mock-upstream",
        help="run the bundled mock provider",
        description="Run the bundled mock LLM provider (OpenAI wire format) for tests, "
        "demos and benchmarks.",
    )
    from aigateway.testing.mock_provider import add_mock_arguments

    add_mock_arguments(mock)

    bench = commands.add_parser(
        "bench",
        help="measure the gateway against its baselines under load",
        description="Start the mock provider, the gateway and its baselines on loopback "
        "ports, load them with wrk, print tables, stop everything. See docs/benchmarks.md.",
    )
    from aigateway.bench import add_bench_arguments

    add_bench_arguments(bench)

    demo = commands.add_parser(
        "cluster-demo",
        help="run one Redis and several gateway nodes on this machine",
        description="Start redis-server, the mock provider and N gateway nodes (each with "
        "its own workers) sharing that Redis, on loopback; Ctrl-C stops them. See "
        "docs/cluster.md.",
    )
    from aigateway.bench.cluster_demo import add_demo_arguments

    add_demo_arguments(demo)

    config = commands.add_parser(
        "config",
        help="print the effective configuration (secrets masked)",
        description="Validate the configuration from the environment and print it with "
        "every secret masked. Exits 2 on an invalid value.",
        epilog=_env_help(specs),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


FLAG_VARIABLES = {
    "host": "AI_GATEWAY_HOST",
    "port": "AI_GATEWAY_PORT",
    "workers": "MAX_WORKERS",
    "log_level": "LOG_LEVEL",
    "upstream_client": "UPSTREAM_CLIENT",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "mock-upstream":
        from aigateway.testing.mock_provider import run_mock_provider

        return int(run_mock_provider(args))
    if args.command == "bench":
        from aigateway.bench import run_bench

        return int(run_bench(args))

    if args.command == "cluster-demo":
        from aigateway.bench.cluster_demo import run_demo

        return int(run_demo(args))

    environ = dict(os.environ)
    for attr, variable in FLAG_VARIABLES.items():
        value = getattr(args, attr, None)
        if value is not None:
            environ[variable] = value
    try:
        settings = load_settings(environ)
    except ConfigError as exc:
        print(f"aigateway: {exc}", file=sys.stderr)
        return 2

    if args.command == "config":
        rows = describe(settings)
        if args.json:
            print(orjson.dumps(dict(rows), option=orjson.OPT_INDENT_2).decode())
        else:
            width = max(len(name) for name, _ in rows)
            for name, value in rows:
                print(f"{name:<{width}}  {value}")
        return 0

    from aigateway.server import serve as run_server

    return run_server(settings)


if __name__ == "__main__":
    sys.exit(main())
