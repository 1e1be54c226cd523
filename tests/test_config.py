"""The config files the project ships load as they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import load_settings

CONFIG = Path(__file__).resolve().parent.parent / "config"


@pytest.mark.parametrize("name", ["relay.toml", "relay.production.toml"])
def test_the_shipped_config_files_load(name: str) -> None:
    """`make run` starts from config/relay.toml; the production example must stay valid too
    (two merges once left a section declared twice)."""
    settings = load_settings(CONFIG / name)
    assert settings.sender_auth.identities == "enforce"
