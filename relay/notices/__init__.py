"""Delivery status notifications (RFC 3464) to the sender: what to report, and the message."""

from relay.notices.dsn import NoticeMessage, RecipientReport, compose, original_headers
from relay.notices.policy import NoticePlan, plan_notice

__all__ = [
    "NoticeMessage",
    "NoticePlan",
    "RecipientReport",
    "compose",
    "original_headers",
    "plan_notice",
]
