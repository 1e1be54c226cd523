"""One delivery attempt of one message to the recipients of one domain.

Hops (and each hop's addresses) are tried in order until one accepts a session; problems
before the transaction (refused connection, timeout, a 4xx or 5xx greeting, EHLO refused)
move on to the next one, like Postfix with `smtp_skip_5xx_greeting`. Once MAIL FROM is sent,
that session's replies decide, and every recipient gets exactly one outcome.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import aiosmtplib
import structlog
from aiosmtplib.email import parse_address

from relay.config import DeliveryTimeouts, Egress
from relay.delivery.mx import Hop
from relay.delivery.outcome import (
    LOCAL_TRANSIENT_CODE,
    Disposition,
    RecipientOutcome,
    classify_exception,
    classify_reply,
    split_status,
)

__all__ = ["send_to_domain"]

log = structlog.get_logger()

_QUIT_TIMEOUT = 10.0
"""The message is delivered by then; a server slow to say goodbye must not hold a worker."""


async def send_to_domain(
    *,
    hops: list[Hop],
    egress: Egress | None,
    mail_from: str,
    recipients: list[str],
    body: bytes,
    timeouts: DeliveryTimeouts,
    helo: str | None = None,
) -> list[RecipientOutcome]:
    """Outcomes in the order of `recipients`.

    `mail_from` "" or "<>" is the null sender. `helo` is used when there is no egress
    (default: the machine's FQDN). Never raises for a delivery problem.
    """
    attempt = _Attempt(
        egress=egress,
        sender="" if mail_from.strip() == "<>" else mail_from,
        recipients=recipients,
        body=body,
        timeouts=timeouts,
        helo=egress.helo if egress is not None else helo,
    )
    attempt.check_addresses()
    if not attempt.open_recipients():
        return attempt.results()

    failure: tuple[BaseException, Hop] | None = None
    for hop, address in _targets(hops, egress):
        try:
            await attempt.via(hop, address)
        except _SessionFailed as failed:
            log.info(
                "delivery.hop_failed",
                host=hop.host,
                address=address,
                port=hop.port,
                egress=attempt.egress_ip,
                error=" ".join(str(part) for part in classify_exception(failed.error)[1:]),
            )
            # A reply from a server tells more (a block, say) than a later refused connection.
            if failure is None or not _has_reply(failure[0]) or _has_reply(failed.error):
                failure = (failed.error, hop)
            continue
        return attempt.results()

    if failure is None:
        attempt.fail_open(Disposition.TRANSIENT, LOCAL_TRANSIENT_CODE, "4.4.4", _no_route(hops))
    else:
        error, hop = failure
        _, code, status, text = classify_exception(error)
        attempt.fail_open(Disposition.TRANSIENT, code, status, text, remote=hop.host)
    return attempt.results()


class _TlsFailed(Exception):
    """The STARTTLS handshake failed; the same server is tried again without TLS."""


class _SessionFailed(Exception):
    """The hop could not be used; the next one may be."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Attempt:
    egress: Egress | None
    sender: str
    recipients: list[str]
    body: bytes
    timeouts: DeliveryTimeouts
    helo: str | None
    outcomes: dict[int, RecipientOutcome] = field(default_factory=dict)
    remote: str | None = None
    tls: bool = False

    @property
    def egress_ip(self) -> str | None:
        return self.egress.ip if self.egress is not None else None

    def results(self) -> list[RecipientOutcome]:
        return [self.outcomes[index] for index in range(len(self.recipients))]

    def open_recipients(self) -> list[int]:
        return [i for i in range(len(self.recipients)) if i not in self.outcomes]

    def settle(
        self,
        index: int,
        disposition: Disposition,
        code: int,
        status: str,
        text: str,
        *,
        remote: str | None = None,
    ) -> None:
        self.outcomes[index] = RecipientOutcome(
            recipient=self.recipients[index],
            disposition=disposition,
            code=code,
            status=status,
            text=text,
            remote=remote if remote is not None else self.remote,
            egress_ip=self.egress_ip,
            tls=self.tls,
        )

    def settle_reply(self, index: int, code: int, message: str) -> None:
        status, text = split_status(code, message)
        self.settle(index, classify_reply(code, message), code, status, text)

    def fail_open(
        self,
        disposition: Disposition,
        code: int,
        status: str,
        text: str,
        *,
        remote: str | None = None,
    ) -> None:
        for index in self.open_recipients():
            self.settle(index, disposition, code, status, text, remote=remote)

    def check_addresses(self) -> None:
        """Addresses that cannot go on an SMTP command line bounce without a connection."""
        if not _valid_address(self.sender):
            self.fail_open(Disposition.PERMANENT, 553, "5.1.7", "bad sender address syntax")
        for index, recipient in enumerate(self.recipients):
            if index not in self.outcomes and not ("@" in recipient and _valid_address(recipient)):
                self.settle(
                    index, Disposition.PERMANENT, 553, "5.1.3", "bad recipient address syntax"
                )

    async def via(self, hop: Hop, address: str) -> None:
        """Deliver through one server; raise _SessionFailed before the transaction starts."""
        try:
            smtp = await self._session(hop, address, tls=True)
        except _TlsFailed as failed:
            log.info("delivery.tls_failed", host=hop.host, address=address, error=str(failed))
            smtp = await self._session(hop, address, tls=False)  # plain text, new connection
        try:
            await self._transaction(smtp)
        finally:
            smtp.close()

    async def _session(self, hop: Hop, address: str, *, tls: bool) -> aiosmtplib.SMTP:
        """Connected, greeted, EHLO done, and STARTTLS done when offered and `tls`."""
        self.remote, self.tls = hop.host, False
        smtp = aiosmtplib.SMTP(
            hostname=address,
            port=hop.port,
            source_address=(self.egress.ip, 0) if self.egress is not None else None,
            local_hostname=self.helo,
            timeout=self.timeouts.command.seconds,
            start_tls=False,
            validate_certs=False,
        )
        in_tls = False
        try:
            await smtp.connect(timeout=self.timeouts.connect.seconds)
            await _hello(smtp)
            if tls and smtp.supports_extension("starttls"):
                in_tls = True
                try:
                    await smtp.starttls(server_hostname=hop.host, tls_context=_tls_context())
                except aiosmtplib.SMTPResponseException:
                    in_tls = False  # e.g. "454 TLS not available": go on in plain text
                else:
                    self.tls = True
                    await _hello(smtp)
        except (aiosmtplib.SMTPException, OSError) as exc:  # ssl.SSLError is an OSError
            smtp.close()
            if in_tls and not isinstance(exc, aiosmtplib.SMTPResponseException):
                raise _TlsFailed(str(exc) or type(exc).__name__) from exc
            raise _SessionFailed(exc) from exc
        except BaseException:
            smtp.close()
            raise
        return smtp

    async def _transaction(self, smtp: aiosmtplib.SMTP) -> None:
        pending = self.open_recipients()
        encoding = "ascii"
        options = []
        if smtp.supports_extension("size"):
            options.append(f"SIZE={len(self.body)}")
        if smtp.supports_extension("8bitmime") and not self.body.isascii():
            options.append("BODY=8BITMIME")
        if not (self.sender.isascii() and all(self.recipients[i].isascii() for i in pending)):
            if smtp.supports_extension("smtputf8"):
                options.append("SMTPUTF8")
                encoding = "utf-8"
            else:  # RFC 6531 3.2: such addresses cannot go to this server
                for index in pending:
                    if not (self.sender.isascii() and self.recipients[index].isascii()):
                        self.settle(
                            index,
                            Disposition.PERMANENT,
                            553,
                            "5.6.7",
                            "the server does not accept UTF-8 addresses (SMTPUTF8)",
                        )
                pending = self.open_recipients()
                if not pending:
                    return
        try:
            await smtp.mail(self.sender, options=options, encoding=encoding)
            accepted = []
            for index in pending:
                try:
                    await smtp.rcpt(self.recipients[index], encoding=encoding)
                except aiosmtplib.SMTPRecipientRefused as refusal:
                    if refusal.code == 421:  # the server is closing: the rest share the reply
                        raise
                    self.settle_reply(index, refusal.code, refusal.message)
                else:
                    accepted.append(index)
            if accepted:
                reply = await smtp.data(self.body, timeout=self.timeouts.data.seconds)
                for index in accepted:
                    self.settle_reply(index, reply.code, reply.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.fail_open(*classify_exception(exc))
        log.info(
            "delivery.session",
            host=self.remote,
            egress=self.egress_ip,
            tls=self.tls,
            **_counts(self.outcomes.values()),
        )
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await smtp.quit(timeout=min(_QUIT_TIMEOUT, self.timeouts.command.seconds))


async def _hello(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.ehlo()
    except aiosmtplib.SMTPHeloError:
        if not smtp.is_connected:
            raise
        await smtp.helo()


def _targets(hops: list[Hop], egress: Egress | None) -> Iterator[tuple[Hop, str]]:
    """(hop, address) to connect to; a hop without addresses is reached by its name."""
    version = ipaddress.ip_address(egress.ip).version if egress is not None else None
    for hop in hops:
        if not hop.addresses:
            yield hop, hop.host
            continue
        for address in hop.addresses:
            if version is None or ipaddress.ip_address(address).version == version:
                yield hop, address


def _no_route(hops: list[Hop]) -> str:
    if not hops:
        return "no route to the domain"
    return "no MX address of the egress address family (IPv4/IPv6)"


def _has_reply(error: BaseException) -> bool:
    return isinstance(error, aiosmtplib.SMTPResponseException)


def _valid_address(address: str) -> bool:
    """A bare mailbox that goes on the command line unchanged ("Name <a@b>" is not one)."""
    try:
        return parse_address(address) == address
    except ValueError:
        return False


def _counts(outcomes: Iterable[RecipientOutcome]) -> dict[str, int]:
    counts = {disposition.value: 0 for disposition in Disposition}
    for outcome in outcomes:
        counts[outcome.disposition.value] += 1
    return counts


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Opportunistic TLS: encrypt, do not authenticate (MX certificates are often self-signed)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
