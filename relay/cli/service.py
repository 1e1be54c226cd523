"""`relay run`, `relay sink` and `relay send`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

import structlog

from relay.app import collect_less, install_stop_signals
from relay.cli.common import Failure, load, read_password
from relay.config import HostPort, Settings, SinkSettings
from relay.logging import configure_logging
from relay.node.supervisor import run_node, run_one
from relay.send import build_test_message, send_message
from relay.sink import serve_sink
from relay.tls import client_context, server_context


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser("run", help="start the relay (listeners and delivery workers)")
    run.add_argument(
        "--processes",
        type=_process_count,
        metavar="N",
        help="processes sharing the listeners and the delivery work, under a supervisor that"
        " restarts them (default: run.processes of the config, else one per core); 1: a"
        " single process, no supervisor",
    )
    run.set_defaults(handler=_run)

    sink = commands.add_parser("sink", help="a catch-all SMTP server storing mail as .eml files")
    sink.add_argument("--listen", metavar="HOST:PORT", help="default: sink.address of the config")
    sink.add_argument("--dir", metavar="PATH", help="default: sink.dir of the config")
    sink.set_defaults(handler=_sink)

    send = commands.add_parser("send", help="submit a test message with AUTH over TLS")
    send.add_argument("--login", required=True)
    send.add_argument("--password-stdin", action="store_true")
    send.add_argument("--to", required=True, action="append", metavar="ADDRESS")
    send.add_argument("--from", dest="sender", metavar="ADDRESS", help="default: LOGIN@hostname")
    send.add_argument("--subject", default="Test message from relay send")
    send.add_argument("--body", default="Hello from the relay.\n")
    send.add_argument("--server", metavar="HOST:PORT", help="default: the first listener")
    send.add_argument("--tls", choices=["starttls", "implicit"], help="default: the listener's")
    send.add_argument("--cafile", metavar="PATH", help="trust this CA (default: tls.cert)")
    send.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    send.set_defaults(handler=_send)


def _first_message_hint(settings: Settings) -> str:
    listener = settings.submission.listeners[0]
    addresses = ", ".join(str(x.address) for x in settings.submission.listeners)
    return "\n".join(
        [
            "",
            f"Relay listening on {addresses}.",
            "Send a first message:",
            "  .venv/bin/relay account add demo        # prints the generated password",
            f"  .venv/bin/relay domain add demo demo@{settings.hostname} --verified",
            "  .venv/bin/relay send --login demo --to someone@example.com",
            f"  (submits over {listener.tls} to {listener.address}; the dev config routes every"
            f" domain to the sink, which stores it under {settings.sink.dir}/)",
            "",
        ]
    )


def _process_count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a number of processes: {text!r}")
    return int(text)


def _run(args: argparse.Namespace) -> int:
    """Not a coroutine: with several processes this one is their supervisor, and it forks
    them before any event loop runs here."""
    settings = load(args)
    configure_logging(settings.log)
    structlog.contextvars.bind_contextvars(node=settings.node.id)  # a fleet's logs, merged
    processes = settings.run.count() if not args.processes else args.processes
    if settings.tls.self_signed:
        print(_first_message_hint(settings), file=sys.stderr)
    collect_less()
    if processes == 1:
        run_one(settings)
    else:
        run_node(settings, processes)
    return 0


async def _sink(args: argparse.Namespace) -> int:
    settings = load(args)
    configure_logging(settings.log)
    sink = SinkSettings(
        address=HostPort.parse(args.listen) if args.listen else settings.sink.address,
        dir=Path(args.dir) if args.dir else settings.sink.dir,
    )
    # Offer STARTTLS with the relay's certificate when there is one, as a real MX would.
    cert, key = settings.tls.cert, settings.tls.key
    tls = server_context(cert, key) if cert.is_file() and key.is_file() else None
    stop = asyncio.Event()
    install_stop_signals(stop)
    serving = asyncio.create_task(serve_sink(sink, tls_context=tls))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if serving.done():
        exc = serving.exception()
        if isinstance(exc, OSError):
            raise Failure(f"sink cannot listen on {sink.address}: {exc.strerror or exc}")
        serving.result()
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    return 0


async def _send(args: argparse.Namespace) -> int:
    settings = load(args)
    listener = settings.submission.listeners[0]
    address = HostPort.parse(args.server) if args.server else listener.address
    tls_mode = args.tls or listener.tls
    cafile = Path(args.cafile) if args.cafile else settings.tls.cert
    context = client_context(cafile=cafile if cafile.is_file() else None, verify=not args.insecure)
    sender = args.sender or f"{args.login}@{settings.hostname}"
    # Built first: a bad --subject or address is refused before the password is asked for.
    message = build_test_message(sender, args.to, args.subject, args.body, settings.hostname)
    password = read_password(args.password_stdin)
    if password is None:
        raise Failure("no password: use --password-stdin or run in a terminal")
    result = await send_message(
        host=address.host,
        port=address.port,
        tls=tls_mode,
        login=args.login,
        password=password,
        mail_from=sender,
        recipients=args.to,
        message=message,
        ssl_context=context,
    )
    for rcpt, (code, text) in result.refused.items():
        print(f"refused {rcpt}: {code} {text}")
    code, text = result.reply
    print(f"{code} {text}")
    return 0
