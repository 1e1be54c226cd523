"""DANE (RFC 7672) against the test DNS server signing its zones (DNSSEC, Ed25519) and a sink
doing STARTTLS: the certificate must match a TLSA record that DNSSEC proves."""

from __future__ import annotations

import hashlib
import ssl

import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from structlog.testing import capture_logs

from relay.delivery.dane import TlsaRecord, certificate_matches, parse_anchors
from relay.errors import NotFound
from relay.sink import Sink
from tests.support.dns_server import DnsServer
from tests.support.engine import engine, sink_on

ZONE = "dest.test. MX 10 mx.dest.test.\nmx.dest.test. A 127.0.0.10\n"


def leaf(ca: trustme.CA, name: str) -> tuple[ssl.SSLContext, bytes]:
    """A server context with a certificate for `name`, and that certificate (DER)."""
    cert = ca.issue_cert(name)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    der = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()).public_bytes(Encoding.DER)
    return context, der


def spki_sha256(der: bytes) -> str:
    key = x509.load_der_x509_certificate(der).public_key()
    return hashlib.sha256(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()


def test_certificate_matching(ca) -> None:
    _, der = leaf(ca, "mx.dest.test")
    digest = bytes.fromhex(spki_sha256(der))
    assert certificate_matches(der, (TlsaRecord(3, 1, 1, digest),))
    assert certificate_matches(der, (TlsaRecord(3, 0, 0, der),))
    assert certificate_matches(der, (TlsaRecord(3, 0, 2, hashlib.sha512(der).digest()),))
    assert not certificate_matches(der, (TlsaRecord(3, 1, 1, b"x" * 32),))
    assert not certificate_matches(der, (TlsaRecord(2, 1, 1, digest),))  # DANE-TA: not usable
    assert not TlsaRecord(1, 1, 1, digest).usable  # PKIX usages are unusable for SMTP


def test_anchors_parse() -> None:
    anchors = parse_anchors(
        [". DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D"]
    )
    [(name, rdataset)] = anchors.items()
    assert name.to_text() == "." and len(rdataset) == 1


async def run(
    redis,
    clock,
    ca,
    *,
    tls: ssl.SSLContext | None,
    zone: str,
    sign: list[str],
    tamper: str = "",
    anchor_zone: str = "dest.test.",
) -> tuple[Sink, list, object]:
    """One message to bob@dest.test by MX; the TLSA record `zone` names `{port}`."""
    sink = Sink(tls_context=tls)
    async with sink_on(sink, "127.0.0.10") as route, DnsServer(ZONE) as dns:
        port = int(route.split(":")[1])
        dns.load(zone.format(port=port))
        anchors = {z: dns.sign(z) for z in sign}
        if tamper:
            dns.load(tamper.format(port=port))
        settings = dns.settings()
        if anchor_zone in anchors:
            settings = settings.model_copy(update={"trust_anchors": [anchors[anchor_zone]]})
        with capture_logs() as logs:
            async with engine(redis, clock, dns=settings, mx_port=port) as e:
                queue_id = await e.submit("bob@dest.test")
                await e.step()
                try:
                    [job] = await e.queue.jobs_of(queue_id)
                except NotFound:
                    job = None
    return sink, logs, job


def tlsa(der: bytes) -> str:
    return f"_{{port}}._tcp.mx.dest.test. TLSA 3 1 1 {spki_sha256(der)}\n"


async def test_a_certificate_matching_the_signed_tlsa_is_delivered(redis, clock, ca) -> None:
    context, der = leaf(ca, "any-name.example")  # DANE-EE: the name does not matter
    sink, logs, job = await run(redis, clock, ca, tls=context, zone=tlsa(der), sign=["dest.test."])
    assert job is None and sink.count == 1 and sink.messages[0].tls
    [line] = [log for log in logs if log["event"] == "delivery.delivered"]
    assert line["tls_policy"] == "dane"


async def test_a_certificate_matching_no_tlsa_record_defers(redis, clock, ca) -> None:
    context, _ = leaf(ca, "mx.dest.test")
    _, other = leaf(ca, "other.test")
    sink, _, job = await run(redis, clock, ca, tls=context, zone=tlsa(other), sign=["dest.test."])
    assert sink.count == 0 and job is not None
    assert str(job.last_error).startswith("451 4.7.5 mx.dest.test: the certificate matches no TLSA")


async def test_tlsa_without_starttls_defers(redis, clock, ca) -> None:
    _, der = leaf(ca, "mx.dest.test")
    sink, _, job = await run(redis, clock, ca, tls=None, zone=tlsa(der), sign=["dest.test."])
    assert sink.count == 0 and job is not None
    assert str(job.last_error).startswith("451 4.7.10 ")


async def test_a_bogus_signature_defers_rather_than_going_unauthenticated(redis, clock, ca) -> None:
    context, der = leaf(ca, "mx.dest.test")
    _, other = leaf(ca, "other.test")
    sink, _, job = await run(
        redis,
        clock,
        ca,
        tls=context,
        zone=tlsa(der),
        sign=["dest.test."],
        tamper=tlsa(other),  # changed after signing: the RRSIG no longer validates
    )
    assert sink.count == 0 and job is not None
    assert str(job.last_error).startswith("451 4.7.5 DANE: ")


async def test_an_unsigned_zone_means_no_dane(redis, clock, ca) -> None:
    context, _ = leaf(ca, "mx.dest.test")
    _, other = leaf(ca, "other.test")
    sink, logs, job = await run(redis, clock, ca, tls=context, zone=tlsa(other), sign=[])
    assert job is None and sink.count == 1
    [line] = [log for log in logs if log["event"] == "delivery.delivered"]
    assert line["tls_policy"] == "opportunistic"


async def test_the_chain_of_trust_goes_down_through_the_parent_s_ds(redis, clock, ca) -> None:
    context, der = leaf(ca, "mx.dest.test")
    _, other = leaf(ca, "other.test")
    for record, delivered in ((tlsa(der), True), (tlsa(other), False)):
        sink = Sink(tls_context=context)
        async with sink_on(sink, "127.0.0.10") as route, DnsServer(ZONE) as dns:
            port = int(route.split(":")[1])
            dns.load(record.format(port=port))
            dns.sign("dest.test.")
            dns.set("dest.test.", "DS", dns.ds("dest.test."))
            anchor = dns.sign("test.")  # the anchor is the parent's key only
            settings = dns.settings().model_copy(update={"trust_anchors": [anchor]})
            async with engine(redis, clock, dns=settings, mx_port=port) as e:
                await e.submit("bob@dest.test")
                await e.step()
        assert sink.count == (1 if delivered else 0)
