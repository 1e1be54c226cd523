"""One delivery attempt of one message to the recipients of one domain.

Hops (and each hop's addresses) are tried in order until one accepts a session; problems
before the transaction (refused connection, timeout, a 4xx or 5xx greeting, EHLO refused)
move on to the next one, like Postfix with `smtp_skip_5xx_greeting`; so does a block-like
refusal of MAIL FROM. Once MAIL FROM is accepted, that session's replies decide, and every
recipient gets exactly one outcome. When no hop accepted a session, the report says whether
the egress IP looks at fault (a block) or nothing answered, so the caller can try another IP.
"""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import aiosmtplib
import structlog
from aiosmtplib.email import parse_address

from relay.address import is_null_sender
from relay.config import DeliveryTimeouts, Egress
from relay.delivery.dane import TlsaRecord, certificate_matches
from relay.delivery.dsn_forward import mail_options, rcpt_options
from relay.delivery.errors import TlsPolicyFailure
from relay.delivery.mx import Hop
from relay.delivery.outcome import (
    LOCAL_TRANSIENT_CODE,
    Disposition,
    RecipientOutcome,
    classify_exception,
    classify_reply,
    is_block_like,
    split_status,
)
from relay.delivery.sessions import PooledSession, SessionPool
from relay.delivery.tls_policy import TlsRequirement, opportunistic_context
from relay.delivery.wire import send_data
from relay.queue.model import DsnRequest

__all__ = ["AttemptReport", "IpProblem", "attempt_domain"]

log = structlog.get_logger()

_QUIT_TIMEOUT = 10.0
"""The message is delivered by then; a server slow to say goodbye must not hold a worker."""


IpProblem = Literal["block", "unreachable"]
"""Why no hop took a session from this IP: a block-like reply, or no reply at all."""


@dataclass(frozen=True)
class AttemptReport:
    outcomes: list[RecipientOutcome]
    """One per recipient, in the order given."""
    ip_problem: IpProblem | None = None
    """Set when no hop accepted a transaction from this egress IP."""
    connected: bool = False
    """A server accepted MAIL FROM from this IP (whatever it then said of the recipients)."""
    tls_failures: tuple[tuple[str, str], ...] = ()
    """(RFC 8460 result type, MX host) of each session the TLS policy stopped."""


async def attempt_domain(
    *,
    hops: list[Hop],
    egress: Egress | None,
    mail_from: str,
    recipients: list[str],
    body: bytes,
    timeouts: DeliveryTimeouts,
    helo: str | None = None,
    sessions: SessionPool | None = None,
    dsn: DsnRequest | None = None,
    tls: TlsRequirement | None = None,
    max_messages: int | None = None,
    idle: float | None = None,
) -> AttemptReport:
    """One attempt from one egress IP over the hops in order.

    `mail_from` "" or "<>" is the null sender. `helo` is used when there is no egress
    (default: the machine's FQDN). With `sessions`, an open session to the same server from
    the same IP is reused, and the session is kept for the next message. Never raises for a
    delivery problem. `dsn`: the sender's DSN parameters, passed on when the hop offers DSN.
    `tls`: what TLS the destination must have (default: opportunistic). `max_messages`,
    `idle`: the destination's session limits (default: the pool's).
    """
    attempt = _Attempt(
        egress=egress,
        sender="" if is_null_sender(mail_from) else mail_from,
        recipients=recipients,
        body=body,
        timeouts=timeouts,
        helo=egress.helo if egress is not None else helo,
        sessions=sessions,
        dsn=dsn,
        requirement=tls or TlsRequirement(),
        max_messages=max_messages,
        idle=idle,
    )
    attempt.check_addresses()
    if not attempt.open_recipients():
        return AttemptReport(attempt.results())

    failure: tuple[BaseException, Hop] | None = None
    errors: list[BaseException] = []
    tls_failures: list[tuple[str, str]] = []
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
            errors.append(failed.error)
            if isinstance(failed.error, TlsPolicyFailure):
                tls_failures.append((failed.error.result_type, hop.host))
            # A reply from a server tells more (a block, say) than a later refused connection.
            if failure is None or not _has_reply(failure[0]) or _has_reply(failed.error):
                failure = (failed.error, hop)
            continue
        return AttemptReport(
            attempt.results(),
            connected=True,
            tls_failures=(*tls_failures, *attempt.probe_failures),
        )

    if failure is None:
        attempt.fail_open(Disposition.TRANSIENT, LOCAL_TRANSIENT_CODE, "4.4.4", _no_route(hops))
        return AttemptReport(
            attempt.results(), tls_failures=(*tls_failures, *attempt.probe_failures)
        )
    error, hop = failure
    _, code, status, text = classify_exception(error)
    attempt.fail_open(Disposition.TRANSIENT, code, status, text, remote=hop.host)
    return AttemptReport(
        attempt.results(),
        _ip_problem(errors),
        tls_failures=(*tls_failures, *attempt.probe_failures),
    )


def _ip_problem(errors: list[BaseException]) -> IpProblem | None:
    """A block-like reply anywhere blames the IP; only silence (refused, timeouts) may.
    A TLS policy not met is the destination's doing: another IP would fare no better."""
    if any(isinstance(e, TlsPolicyFailure) for e in errors):
        return None
    replies = [e for e in errors if isinstance(e, aiosmtplib.SMTPResponseException)]
    if any(is_block_like(e.code, e.message) for e in replies):
        return "block"
    return None if replies else "unreachable"


class _TlsFailed(Exception):
    """The STARTTLS handshake failed; the same server is tried again without TLS."""


class _ProbeFailed(Exception):
    """The certificate check of an MTA-STS `testing` policy failed: reported, and the same
    server is tried again as the rule says."""

    def __init__(self, result_type: str) -> None:
        super().__init__(result_type)
        self.result_type = result_type


class _SessionFailed(Exception):
    """The hop could not be used; the next one may be."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _StaleSession(Exception):
    """A reused session turned out closed before MAIL FROM was answered: open a new one."""


@dataclass
class _Attempt:
    egress: Egress | None
    sender: str
    recipients: list[str]
    body: bytes
    timeouts: DeliveryTimeouts
    helo: str | None
    sessions: SessionPool | None = None
    dsn: DsnRequest | None = None
    requirement: TlsRequirement = field(default_factory=TlsRequirement)
    max_messages: int | None = None
    idle: float | None = None
    outcomes: dict[int, RecipientOutcome] = field(default_factory=dict)
    remote: str | None = None
    tls: bool = False
    verified: bool = False
    probe_failures: list[tuple[str, str]] = field(default_factory=list)
    """(result type, MX host) of what an MTA-STS `testing` policy would have stopped."""

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
        dsn_passed: bool = False,
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
            dsn_passed=dsn_passed,
            tls_policy=self.requirement.policy,
        )

    def settle_reply(
        self, index: int, code: int, message: str, *, dsn_passed: bool = False
    ) -> None:
        status, text = split_status(code, message)
        disposition = classify_reply(code, message)
        self.settle(index, disposition, code, status, text, dsn_passed=dsn_passed)

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
        if not self.requirement.allows_mx(hop.host) and self.requirement.report_only:
            self.probe_failures.append(("validation-failure", hop.host))
        elif not self.requirement.allows_mx(hop.host):
            raise _SessionFailed(
                TlsPolicyFailure(
                    f"{hop.host} is not an MX host of the domain's policy"
                    f" ({self.requirement.policy})",
                    status="4.7.5",
                    result_type="validation-failure",
                )
            )
        key = (self.egress_ip or "", address, hop.port)
        pooled = self.sessions.take(key) if self.sessions is not None else None
        if pooled is not None and not self._meets(pooled, hop.host):
            pooled.smtp.close()
            pooled = None
        if pooled is not None:
            self.remote, self.tls, self.verified = pooled.remote, pooled.tls, pooled.verified
            try:
                await self._use(pooled, key, reused=True)
                return
            except _StaleSession:
                pooled.smtp.close()
        try:
            smtp = await self._session(hop, address, tls=True)
        except _TlsFailed as failed:
            log.info("delivery.tls_failed", host=hop.host, address=address, error=str(failed))
            smtp = await self._session(hop, address, tls=False)  # plain text, new connection
        except _ProbeFailed as failed:  # reported; the session goes on as the rule says
            self.probe_failures.append((failed.result_type, hop.host))
            smtp = await self._session(hop, address, tls=True, probe=False)
        session = PooledSession(smtp, self.tls, hop.host, self.verified, self.requirement.policy)
        await self._use(session, key, reused=False)

    def _meets(self, pooled: PooledSession, host: str) -> bool:
        """A kept session serves a destination whose TLS requirement it met when opened."""
        if self.requirement.mode == "verify" or self.requirement.dane_for(host) is not None:
            return pooled.verified
        return pooled.tls or not self.requirement.encrypt

    async def _use(self, session: PooledSession, key: tuple[str, str, int], reused: bool) -> None:
        keep = False
        try:
            keep = await self._transaction(session.smtp, reused=reused)
        finally:
            if keep and self.sessions is not None:
                self.sessions.give(key, session, max_messages=self.max_messages, idle=self.idle)
            elif keep:
                await _quit(session.smtp, self.timeouts.command.seconds)
            else:
                session.smtp.close()

    async def _session(
        self, hop: Hop, address: str, *, tls: bool, probe: bool = True
    ) -> aiosmtplib.SMTP:
        """Connected, greeted, EHLO done, and STARTTLS done when offered and `tls`.
        `probe`: under an MTA-STS `testing` policy, check the certificate (and report)."""
        self.remote, self.tls, self.verified = hop.host, False, False
        required = self.requirement
        dane = required.dane_for(hop.host)
        must_encrypt = required.encrypt or dane is not None
        probing = probe and required.report_only and dane is None and required.mode != "verify"
        context = required.context(verify=probing) if dane is None else opportunistic_context()
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
                    await smtp.starttls(server_hostname=hop.host, tls_context=context)
                except aiosmtplib.SMTPResponseException as refused:
                    if must_encrypt:
                        raise _needs_tls(hop.host, required, refused.message) from refused
                    in_tls = False  # e.g. "454 TLS not available": go on in plain text
                else:
                    self.tls, self.verified = True, required.mode == "verify" or probing
                    if dane is not None:
                        self.verified = _dane_check(smtp, hop.host, dane)
                    await _hello(smtp)
            elif must_encrypt:
                raise _needs_tls(hop.host, required, "STARTTLS not offered")
            elif probing and tls:
                self.probe_failures.append(("starttls-not-supported", hop.host))
        except TlsPolicyFailure as exc:
            smtp.close()
            raise _SessionFailed(exc) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:  # ssl.SSLError is an OSError
            smtp.close()
            tls_error = in_tls and not isinstance(exc, aiosmtplib.SMTPResponseException)
            if tls_error and must_encrypt:
                failure = TlsPolicyFailure(
                    f"TLS with {hop.host} failed ({required.policy}): {_tls_reason(exc)}",
                    result_type=_result_type(exc),
                )
                raise _SessionFailed(failure) from exc
            if tls_error and probing:
                raise _ProbeFailed(_result_type(exc)) from exc
            if tls_error:
                raise _TlsFailed(str(exc) or type(exc).__name__) from exc
            raise _SessionFailed(exc) from exc
        except BaseException:
            smtp.close()
            raise
        return smtp

    async def _transaction(self, smtp: aiosmtplib.SMTP, *, reused: bool) -> bool:
        """Send to the open recipients; True when the session can take another message."""
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
                    return True
        dsn = self.dsn if self.dsn is not None and smtp.supports_extension("dsn") else None
        if dsn is not None:
            options += mail_options(dsn)
        try:
            await self._mail(smtp, options, encoding, reused=reused)
            accepted = []
            for index in pending:
                recipient = self.recipients[index]
                extra = rcpt_options(dsn, recipient) if dsn is not None else None
                try:
                    await smtp.rcpt(recipient, options=extra, encoding=encoding)
                except aiosmtplib.SMTPRecipientRefused as refusal:
                    if refusal.code == 421:  # the server is closing: the rest share the reply
                        raise
                    self.settle_reply(index, refusal.code, refusal.message)
                else:
                    accepted.append(index)
            if accepted:
                reply = await send_data(smtp, self.body, timeout=self.timeouts.data.seconds)
                for index in accepted:
                    self.settle_reply(index, reply.code, reply.message, dsn_passed=dsn is not None)
            else:
                await smtp.rset()  # MAIL is open: close the transaction before the next one
            clean = smtp.is_connected
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.fail_open(*classify_exception(exc))
            clean = False
        log.info(
            "delivery.session",
            host=self.remote,
            egress=self.egress_ip,
            tls=self.tls,
            tls_policy=self.requirement.policy,
            reused=reused,
            **_counts(self.outcomes.values()),
        )
        return clean

    async def _mail(
        self, smtp: aiosmtplib.SMTP, options: list[str], encoding: str, *, reused: bool
    ) -> None:
        """MAIL FROM; a block-like refusal counts as a failed session (another IP may pass)."""
        try:
            await smtp.mail(self.sender, options=options, encoding=encoding)
        except aiosmtplib.SMTPResponseException as exc:
            if reused and exc.code == 421:  # e.g. the server's idle timeout
                raise _StaleSession from exc
            if is_block_like(exc.code, exc.message):
                raise _SessionFailed(exc) from exc
            raise
        except (aiosmtplib.SMTPServerDisconnected, OSError) as exc:
            if reused:
                raise _StaleSession from exc
            raise


async def _quit(smtp: aiosmtplib.SMTP, command_timeout: float) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException, OSError):
        await smtp.quit(timeout=min(_QUIT_TIMEOUT, command_timeout))


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


def _dane_check(smtp: aiosmtplib.SMTP, host: str, records: tuple[TlsaRecord, ...]) -> bool:
    """The certificate must match a usable TLSA record (RFC 7672); True when one matched,
    False when the records hold none this relay can use (encrypted, not authenticated)."""
    if not any(record.usable for record in records):
        return False
    ssl_object = smtp.get_transport_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der or not certificate_matches(der, records):
        raise TlsPolicyFailure(
            f"{host}: the certificate matches no TLSA record (dane)",
            status="4.7.5",
            result_type="tlsa-invalid",
        )
    return True


def _needs_tls(host: str, required: TlsRequirement, why: str) -> TlsPolicyFailure:
    return TlsPolicyFailure(
        f"{host}: {why.strip() or 'STARTTLS refused'}; TLS is required ({required.policy})",
        status="4.7.10",
        result_type="starttls-not-supported",
    )


_VERIFY_RESULTS = {
    62: "certificate-host-mismatch",  # X509_V_ERR_HOSTNAME_MISMATCH
    64: "certificate-host-mismatch",  # X509_V_ERR_IP_ADDRESS_MISMATCH
    10: "certificate-expired",  # X509_V_ERR_CERT_HAS_EXPIRED
    18: "certificate-not-trusted",  # self-signed leaf
    19: "certificate-not-trusted",  # self-signed in the chain
    20: "certificate-not-trusted",  # issuer unknown
    21: "certificate-not-trusted",  # cannot verify the first certificate
}


def _result_type(exc: BaseException) -> str:
    """RFC 8460 section 4.3 result type of a failed handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY_RESULTS.get(exc.verify_code, "validation-failure")
    return "validation-failure"


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not valid: {exc.verify_message or exc.reason}"
    return str(exc) or type(exc).__name__
