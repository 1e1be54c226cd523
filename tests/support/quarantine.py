"""A message put in quarantine as the content scan does it: its body written to the store's
spool, then held (moved, not copied) with the record the scan would make."""

from __future__ import annotations

import secrets

from relay.content.quarantine import Held, QuarantineStore

BODY = b"From: alice@example.org\r\nSubject: Cheap offer\r\n\r\nBuy now.\r\n"


async def hold(
    store: QuarantineStore,
    kind: Held,
    account: str = "alice",
    recipients: tuple[str, ...] = ("bob@example.com",),
    body: bytes = BODY,
) -> str:
    """The quarantine id (the body's id)."""
    body_id = secrets.token_hex(8)
    stored = await store.spool.write(body_id, body)
    record = await store.hold(
        kind,
        body_id=body_id,
        size=stored.size,
        head=stored.head,
        account=account,
        mail_from=f"{account}@example.org",
        recipients=recipients,
        reason="score 8.00" if kind is Held.SPAM else "Test.EICAR.NDB",
        prefix=b"Received: from test\r\n",
    )
    return record.id
