"""A real headless Chromium (Debian's, driven by Playwright) against `relay run`'s HTTP
listener: an operator lifts a suspension after reading its evidence, the customer's banner
is there before and gone after; a customer lifts a first-offence block by changing the
password; a customer delivers their own mail that rspamd had held as suspected spam, and
cannot release their mail that clamd found malware in. Screenshots of each page go to
var/screenshots/.

Chromium is installed by `make test` (scripts/install-chromium.sh). Without it this test
fails rather than skip, so CI cannot pass without running it; RELAY_BROWSER_TESTS=skip
skips it on a workstation that cannot install it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from relay.abuse.factory import suspension_service
from relay.app import quota_store
from relay.clock import SystemClock
from relay.config import load_settings
from relay.web.auth import OperatorStore, Role
from reputation import Kind
from tests.conftest import PASSWORD, add_sender, free_port
from tests.support.relay_process import start_relay, stop_relay, write_config
from tests.support.scanners import EICAR, QUARANTINE_MARKER
from tests.support.web import OPERATOR_PASSWORD
from tests.test_content_scan import message, send

SCREENSHOTS = Path("var/screenshots")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = pytest.mark.timeout(180)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("RELAY_BROWSER_TESTS") == "skip":
            pytest.skip("RELAY_BROWSER_TESTS=skip and no chromium")
        pytest.fail("chromium is not installed: run `make browser` (apt-get install chromium)")
    return path


def http_relay_config(
    tmp_path: Path, redis_server, server_cert, sink_port: int, **options: str
) -> tuple[Path, int, int]:
    """A relay.toml with the HTTP listener: (its path, the SMTP port, the HTTP port)."""
    smtp_port, http_port = free_port(), free_port()
    config = tmp_path / "relay.toml"
    write_config(
        config,
        redis_url=redis_server.url,
        server_cert=server_cert,
        submit_port=smtp_port,
        sink_port=sink_port,
        http_port=http_port,
        **options,
    )
    return config, smtp_port, http_port


async def log_in_page(page, base: str, login: str, password: str, operator: bool = False) -> None:
    """The login form, filled and sent as a person does; waits for the first page after."""
    start = f"{base}/console" if operator else f"{base}/home"
    await page.goto(f"{base}/console/login" if operator else f"{base}/login")
    await page.fill("input[name=login]", login)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(start)


@pytest.fixture
async def relay_with_http(redis_server, redis, server_cert, sink, tmp_path: Path):
    config, smtp_port, http_port = http_relay_config(tmp_path, redis_server, server_cert, sink[1])
    process = await start_relay(config, smtp_port)
    try:
        yield load_settings(config), f"http://127.0.0.1:{http_port}"
    finally:
        await stop_relay(process)


async def test_operator_lifts_and_customer_changes_password_in_chromium(
    relay_with_http, redis
) -> None:
    from playwright.async_api import async_playwright

    settings, base = relay_with_http
    executable = chromium()
    await asyncio.to_thread(SCREENSHOTS.mkdir, parents=True, exist_ok=True)
    clock = SystemClock()
    service = suspension_service(redis, settings, clock, quota_store(redis, settings))
    await add_sender(redis, "alice")
    await add_sender(redis, "carol")
    await OperatorStore(redis).add("adam", OPERATOR_PASSWORD, Role.ADMIN, clock.now())
    evidence = {"zone": "dbl.example", "answer": "127.0.1.2", "txt": "listed for spam links"}
    first = await service.suspend(
        "alice", Kind.REPUTATION, "sender domain listed on dbl.example", evidence, "system:test"
    )
    await service.suspend("carol", Kind.ABUSE, "spam complaint", {"reporter": "fbl"}, "system:t")

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            customer = await browser.new_page()
            await log_in_page(customer, base, "alice", PASSWORD)
            banner = customer.locator("#suspended-banner")
            assert await banner.is_visible()
            assert "dbl.example" in await banner.inner_text()
            await customer.screenshot(
                path=str(SCREENSHOTS / "1-customer-suspended.png"), full_page=True
            )

            operator = await (await browser.new_context()).new_page()
            await log_in_page(operator, base, "adam", OPERATOR_PASSWORD, operator=True)
            await operator.screenshot(
                path=str(SCREENSHOTS / "2-operator-dashboard.png"), full_page=True
            )
            await operator.click(f"a[href='/console/suspensions/{first.id}']")
            evidence_table = operator.locator("#evidence")
            assert "listed for spam links" in await evidence_table.inner_text()
            await operator.screenshot(
                path=str(SCREENSHOTS / "3-operator-suspension.png"), full_page=True
            )
            await operator.fill("#lift-form input[name=reason]", "domain delisted, checked")
            await operator.click("#lift-form button[type=submit]")
            assert await operator.locator("#status").inner_text() == "lifted"
            await operator.screenshot(
                path=str(SCREENSHOTS / "4-operator-lifted.png"), full_page=True
            )

            await customer.reload()
            assert await customer.locator("#suspended-banner").count() == 0
            await customer.screenshot(
                path=str(SCREENSHOTS / "5-customer-lifted.png"), full_page=True
            )

            carol = await (await browser.new_context()).new_page()
            await log_in_page(carol, base, "carol", PASSWORD)
            assert await carol.locator("#suspended-banner").is_visible()
            await carol.fill("input[name=current]", PASSWORD)
            await carol.fill("input[name=new]", "a brand new password")
            await carol.fill("input[name=again]", "a brand new password")
            await carol.click("form[action='/home/password'] button[type=submit]")
            await carol.wait_for_url(f"{base}/home?*")
            assert "lifted" in await carol.locator("[role=status]").inner_text()
            assert await carol.locator("#suspended-banner").count() == 0
            await carol.screenshot(
                path=str(SCREENSHOTS / "6-customer-password-changed.png"), full_page=True
            )
        finally:
            await browser.close()

    assert (await service.store.get(first.id)).closed_by == "operator:adam@web"
    history = await service.store.of_account("carol")
    assert history[0].status.value == "lifted" and history[0].closed_by == "user:carol"


async def test_customer_delivers_held_spam_but_not_malware_in_chromium(
    redis_server, redis, server_cert, sink, ca, clamd_server, rspamd_server, tmp_path: Path
) -> None:
    """`relay run` with the real scanners: spam held at DATA (250, nothing delivered), the
    customer's page lists it with a Deliver button that sends it through the queue; the mail
    with malware (554) is listed as kept for investigation, with no button."""
    from playwright.async_api import async_playwright

    received, sink_port = sink
    config, smtp_port, http_port = http_relay_config(
        tmp_path, redis_server, server_cert, sink_port, tls="starttls"
    )
    with config.open("a") as toml:
        toml.write(
            "[content]\nspam_quarantine = 5.0\nspam_reject = 15.0\n"
            f'[content.clamd]\naddress = "{clamd_server.unix_address}"\n'
            f'[content.rspamd]\nurl = "{rspamd_server.url}"\ndeadline = "20s"\n'
        )
    await add_sender(redis, "alice")
    settings = load_settings(config)
    base = f"http://127.0.0.1:{http_port}"
    process = await start_relay(config, smtp_port)
    try:
        code, reply = await send(settings, ca, message(subject=f"offer {QUARANTINE_MARKER}"))
        assert code == 250 and "held in quarantine" in reply, reply
        code, reply = await send(settings, ca, message(**{"invoice.com": EICAR}))
        assert code == 554, reply
        await asyncio.sleep(0.5)
        assert received.count == 0

        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await log_in_page(page, base, "alice", PASSWORD)
                rows = page.locator("#quarantine tr")
                assert await rows.count() == 3  # the header, the spam, the malware
                held = await page.locator("#quarantine").inner_text()
                assert "Test.EICAR" in held and "kept for investigation" in held
                buttons = page.locator("#quarantine form[action$='/release'] button")
                assert await buttons.count() == 1  # the spam's only
                await page.screenshot(
                    path=str(SCREENSHOTS / "7-customer-quarantine.png"), full_page=True
                )
                await buttons.click()
                await page.wait_for_url(f"{base}/home?*")
                assert "released" in await page.locator("[role=status]").inner_text()
                assert await page.locator("#quarantine tr").count() == 2
            finally:
                await browser.close()
        (delivered,) = await received.wait_for(1, timeout=30)
        assert QUARANTINE_MARKER.encode() in delivered.data
    finally:
        await stop_relay(process)
