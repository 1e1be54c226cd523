"""Request bodies of the API (typed, in the OpenAPI document)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from relay.web.content_actions import ActionName, KindName

__all__ = [
    "Credentials",
    "IpDisable",
    "Lift",
    "ListEntryIn",
    "ListEntryOut",
    "NewPlan",
    "PasswordChange",
    "Reason",
    "Suspend",
    "UnblockAsk",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Credentials(_Body):
    kind: Literal["customer", "operator"] = "customer"
    login: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)


class Reason(_Body):
    reason: str = Field(min_length=1, max_length=500, description="why (audited)")


class Lift(Reason):
    force: bool = Field(False, description="before the minimum duration (audited)")


class Suspend(Reason):
    kind: Literal["admin", "abuse", "reputation"] = "admin"


class IpDisable(Reason):
    pass


class NewPlan(_Body):
    daily: int = Field(gt=0, le=10**9, description="recipients per rolling 24 h")
    per_minute: int | None = Field(None, gt=0, le=10**9, description="default: the config's")
    starts: float | None = Field(None, ge=0, le=10**11, description="epoch seconds; now")
    expires: float | None = Field(None, ge=0, le=10**11, description="epoch seconds; never")


class PasswordChange(_Body):
    current: str = Field(min_length=1, max_length=1024)
    new: str = Field(min_length=1, max_length=1024)


class UnblockAsk(_Body):
    message: str = Field(min_length=1, max_length=2000)


class ListEntryOut(_Body):
    kind: KindName = Field(description="recipient address, recipient domain, or sender address")
    value: str = Field(min_length=1, max_length=320)


class ListEntryIn(ListEntryOut):
    action: ActionName = Field(
        description="deny: refused at MAIL/RCPT with the reason; allow: skips the spam"
        " quarantine (never the malware scan)"
    )
    reason: str = Field("", max_length=200, description="shown in the refusal (audited)")
