"""A key vault for tests that store DKIM keys: a real key file in a temp folder."""

from __future__ import annotations

import tempfile
from pathlib import Path

from relay.config import SenderAuthSettings
from relay.sender_auth.key_vault import KeyVault


def temp_vault() -> KeyVault:
    folder = Path(tempfile.mkdtemp(prefix="relay-test-vault-"))
    settings = SenderAuthSettings(key_file=folder / "dkim.key", create_key_file=True)
    return KeyVault.from_settings(settings)
