"""Form fields the pages share (typed, bounded: a form is input from outside)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form

from relay.web.content_actions import ActionName, KindName

__all__ = ["ActionField", "KindField", "ReasonField", "ValueField"]

KindField = Annotated[KindName, Form()]
ActionField = Annotated[ActionName, Form()]
ValueField = Annotated[str, Form(max_length=320)]
"""An address or a domain."""
ReasonField = Annotated[str, Form(max_length=200)]
