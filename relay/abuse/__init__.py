"""Abuse control: suspensions with evidence, the audit log, blocklist monitoring, complaints."""

from relay.abuse.audit import AuditEntry, AuditLog
from relay.abuse.service import SuspensionService
from relay.abuse.store import Suspension, SuspensionStore

__all__ = ["AuditEntry", "AuditLog", "Suspension", "SuspensionService", "SuspensionStore"]
