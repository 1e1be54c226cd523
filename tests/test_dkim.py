"""Our DKIM signatures verify with dkimpy, an independent implementation."""

from __future__ import annotations

import time

import dkim
import pytest

from reputation.dkim import DkimError, dns_record, generate_key, sign

MESSAGE = (
    b"Received: from laptop ([192.0.2.1])\r\n\tby relay.test; Wed, 25 Nov 2026 17:00:00 GMT\r\n"
    b"From: Alice <alice@customer.example>\r\n"
    b"To: bob@example.com,\r\n  carol@example.com\r\n"
    b"Subject:   Hello   there \t \r\n"
    b"Date: Wed, 25 Nov 2026 17:00:00 +0000\r\n"
    b"Message-ID: <1@customer.example>\r\n"
    b"\r\n"
    b"Hello  Bob,\t \r\n\r\nsee you.\r\n\r\n\r\n"
)


def verify(message: bytes, key) -> bool:
    name, value = dns_record(key)

    def dnsfunc(qname, timeout=5):
        wanted = (name + ".").encode()
        return value.encode() if qname in (wanted, wanted[:-1]) else None

    return bool(dkim.verify(message, dnsfunc=dnsfunc))


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_signature_verifies_and_breaks_when_tampered(algorithm):
    key = generate_key("customer.example", "relay1", algorithm)
    signed = sign(MESSAGE, key, now=int(time.time())) + MESSAGE
    assert verify(signed, key)
    assert not verify(signed.replace(b"see you", b"see yuo"), key)
    assert not verify(signed.replace(b"Hello   there", b"Goodbye"), key)
    # relaxed canonicalization tolerates what relays do to whitespace
    assert verify(signed.replace(b"Subject:   Hello   there", b"Subject: Hello there"), key)


def test_bare_lf_message_and_dns_record():
    key = generate_key("customer.example", "s1", "rsa-sha256", bits=1024)
    lf = MESSAGE.replace(b"\r\n", b"\n")
    assert verify(sign(lf, key, now=int(time.time())) + lf, key)
    name, value = dns_record(key)
    assert name == "s1._domainkey.customer.example" and value.startswith("v=DKIM1; k=rsa; p=")
    ed = generate_key("customer.example", "s2", "ed25519-sha256")
    assert dns_record(ed)[1].startswith("v=DKIM1; k=ed25519; p=")


def test_bad_input():
    with pytest.raises(DkimError, match="selector"):
        generate_key("x.example", "bad selector", "rsa-sha256")
    with pytest.raises(DkimError, match="1024"):
        generate_key("x.example", "s", "rsa-sha256", bits=512)
    key = generate_key("x.example", "s", "ed25519-sha256")
    with pytest.raises(DkimError, match="no From"):
        sign(b"Subject: x\r\n\r\nbody\r\n", key, now=1)
