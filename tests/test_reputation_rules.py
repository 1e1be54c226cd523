import pytest

from reputation.attribution import attribute
from reputation.suspension import (
    EscalationPolicy,
    Kind,
    NotAllowed,
    Status,
    check_deny,
    check_lift,
    terms_for,
)
from reputation.uris import extract_links, registrable_domain

NOW = 1_800_000_000.0
DAY = 86400.0
POLICY = EscalationPolicy()


def test_first_offence_user_may_lift_at_once():
    terms = terms_for(Kind.REPUTATION, 0, NOW, POLICY)
    assert (terms.offence, terms.user_may_lift, terms.not_before, terms.may_deny) == (
        1,
        True,
        None,
        False,
    )
    check_lift(status=Status.OPEN, terms=terms, by_operator=False, now=NOW)
    check_lift(status=Status.OPEN, terms=terms, by_operator=True, now=NOW)
    with pytest.raises(NotAllowed, match="only from offence 3"):
        check_deny(status=Status.OPEN, terms=terms)


def test_second_offence_operator_only_after_five_days():
    terms = terms_for(Kind.ABUSE, 1, NOW, POLICY)
    assert (terms.offence, terms.user_may_lift, terms.not_before) == (2, False, NOW + 5 * DAY)
    with pytest.raises(NotAllowed, match="only an operator"):
        check_lift(status=Status.OPEN, terms=terms, by_operator=False, now=NOW + 6 * DAY)
    with pytest.raises(NotAllowed, match="not before"):
        check_lift(status=Status.OPEN, terms=terms, by_operator=True, now=NOW + 5 * DAY - 1)
    check_lift(status=Status.OPEN, terms=terms, by_operator=True, now=NOW + 5 * DAY)
    check_lift(status=Status.OPEN, terms=terms, by_operator=True, now=NOW, force=True)


def test_third_offence_lasts_longer_and_may_be_denied():
    third = terms_for(Kind.REPUTATION, 2, NOW, POLICY)
    fourth = terms_for(Kind.REPUTATION, 3, NOW, POLICY)
    assert third.not_before == NOW + 10 * DAY and fourth.not_before == NOW + 20 * DAY
    assert third.may_deny and fourth.may_deny
    check_deny(status=Status.OPEN, terms=third)
    with pytest.raises(NotAllowed, match="denied, not open"):
        check_deny(status=Status.DENIED, terms=third)
    with pytest.raises(NotAllowed, match="lifted, not open"):
        check_lift(status=Status.LIFTED, terms=third, by_operator=True, now=NOW + 99 * DAY)


def test_admin_and_derived_kinds():
    admin = terms_for(Kind.ADMIN, 5, NOW, POLICY)
    assert admin.offence == 0 and admin.not_before is None and not admin.user_may_lift
    for kind in (Kind.QUOTA, Kind.EXPIRED):
        with pytest.raises(NotAllowed):
            terms_for(kind, 0, NOW, POLICY)
    assert Kind.ABUSE.is_offence and not Kind.ADMIN.is_offence


def test_attribution_policies():
    traffic = {"big": 90, "small": 9, "tiny": 1, "none": 0}
    assert [a.account for a in attribute(traffic, policy="all", min_share=0.5)] == [
        "big",
        "small",
        "tiny",
    ]
    found = attribute(traffic, policy="share", min_share=0.05)
    assert [(a.account, a.share) for a in found] == [("big", 0.9), ("small", 0.09)]
    assert attribute({}, policy="all", min_share=0) == []


@pytest.mark.parametrize(
    "host,domain",
    [
        ("www.Shop.Example.co.uk", "example.co.uk"),
        ("a.b.github.io", "b.github.io"),
        ("example.com.", "example.com"),
        ("co.uk", None),
        ("", None),
        ("bücher.de", "xn--bcher-kva.de"),
    ],
)
def test_registrable_domains(host, domain):
    assert registrable_domain(host) == domain


def test_links_from_text_html_qp_and_base64():
    message = (
        b"From: a@example.org\r\nSubject: offers\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Visit http://www.spam-one.example.com/=\r\noffer?x=3D1 now, or www.two.test\r\n"
        b"--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + __import__("base64").encodebytes(
            b'<a href="https://click.three.co.uk/t?u=1">x</a> <img src="http://192.0.2.7/p.gif">'
            b' <a href="HTTP://[2001:db8::1]/">v6</a>'
        )
        + b"\r\n--b\r\nContent-Type: image/png\r\n\r\nhttp://not-scanned.example\r\n--b--\r\n"
    )
    links = extract_links(message)
    assert links.domains == ("example.com", "two.test", "three.co.uk")
    assert links.ips == ("192.0.2.7", "2001:db8::1")
    assert not links.truncated


def test_link_extraction_is_bounded():
    body = b"Subject: many\r\n\r\n" + b" ".join(
        f"http://d{n}.example{n}.com/".encode() for n in range(500)
    )
    links = extract_links(body, max_links=20)
    assert len(links.domains) == 20 and links.truncated
    assert extract_links(b"not even a message").domains == ()
