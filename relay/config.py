"""The whole configuration as one frozen, typed object.

Loaded from TOML (`--config PATH`), every value overridable by environment variables
`RELAY_<SECTION>__<KEY>` (e.g. `RELAY_REDIS__URL`, `RELAY_SUBMISSION__MAX_RECIPIENTS`).
Errors name the key: `submission.max_message_size: not a size: '50 XB'`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from quota import Duration, QuotaError, RateSpec
from relay.errors import ConfigError

__all__ = ["HostPort", "Settings", "load_settings"]


def _duration(value: Any) -> Duration:
    try:
        return Duration.parse(value)
    except QuotaError as exc:
        raise ValueError(str(exc)) from None


_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
}


def parse_size(value: Any) -> int:
    """`"50MB"`, `"512KiB"`, `"1000"` or an int → bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = re.fullmatch(r"\s*(\d+)\s*([KMG]i?B|B)?\s*", str(value), re.IGNORECASE)
        if not match:
            raise ValueError(f"not a size: {value!r} (use e.g. 50MB, 512KiB, 1000)")
        size = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").upper()]
    if size <= 0:
        raise ValueError(f"size must be positive: {value!r}")
    return size


DurationField = Annotated[Duration, NoDecode, BeforeValidator(_duration), PlainSerializer(str)]
SizeField = Annotated[int, BeforeValidator(parse_size)]


class HostPort(BaseModel):
    """`"127.0.0.1:2587"` or `"[::1]:2587"` or `"mx.example.net:25"`."""

    model_config = ConfigDict(frozen=True)
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\s\[\]]+):(\d+)", text.strip())
        if not match:
            raise ValueError(f"not host:port: {text!r}")
        host = match.group(1) or match.group(3)
        port = int(match.group(2) or match.group(4))
        if not 0 < port < 65536:
            raise ValueError(f"port out of range in {text!r}")
        return cls(host=host, port=port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _host_port(value: Any) -> HostPort:
    return value if isinstance(value, HostPort) else HostPort.parse(str(value))


HostPortField = Annotated[HostPort, NoDecode, BeforeValidator(_host_port), PlainSerializer(str)]


def _ip(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise ValueError(f"not an IP address: {value!r}") from None


IPField = Annotated[str, BeforeValidator(_ip)]


def _longer_than_zero(cls: type, value: Duration) -> Duration:
    """A validator of durations that must not be 0 (timeouts, intervals)."""
    if value.seconds <= 0:
        raise ValueError("must be longer than 0s")
    return value


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RedisSettings(Section):
    """Where the relay's state lives: one way of `url` (one server), `cluster_nodes` (Redis
    Cluster) or `sentinels` + `service` (a Sentinel-managed primary); none: the embedded one.
    Every value that may hold a password is checked for its shape only and never repeated
    in an error (`relay.redis_client.redact_url` shows them)."""

    url: str = ""
    """Empty: start the embedded redis-server with data in `embedded_dir`. May hold a password:
    never shown as is (`relay.redis_client.redact_url`)."""
    cluster_nodes: tuple[str, ...] = ()
    """`redis://` or `rediss://` URLs of Cluster nodes (one reachable is enough: the others
    are discovered); the first one's user, password and TLS settings are used for every
    node."""
    sentinels: tuple[str, ...] = ()
    """`host:port` of each Sentinel, or a `redis://`/`rediss://` URL when the Sentinels
    speak TLS or need a password of their own."""
    service: str = ""
    """The primary the Sentinels watch: its name (`mymaster`), or a URL whose host is that
    name, carrying how to talk to the primary: `rediss://user:password@mymaster/0`."""
    embedded_dir: Path = Path("var/redis")
    timeout: DurationField = Duration(2.0)
    """Deadline of one Redis call on the submission path; past it the client gets 451."""
    wait_replicas: int = Field(default=0, ge=0)
    """With replicas: a message is acknowledged (250, 202) only once its queue entry reached
    this many replicas (Redis WAIT), so a primary that dies right after loses none. 0: do
    not wait (replication stays asynchronous)."""
    wait_timeout: DurationField = Duration(0.5)
    """How long the WAIT may take; fewer replicas by then answer 451 (the client retries:
    the message may then be delivered twice, never lost)."""

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        """The shape only, and the message never repeats the value (it may hold a password)."""
        if value:
            _check_url(value, schemes=("redis", "rediss", "unix"))
        return value

    @field_validator("cluster_nodes")
    @classmethod
    def _cluster_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for n, url in enumerate(value):
            try:
                _check_url(url, schemes=("redis", "rediss"), host=True)
                if urlsplit(url).path not in ("", "/", "/0"):
                    raise ValueError("a Cluster has only database 0")
            except ValueError as exc:
                raise ValueError(f"entry {n + 1}: {exc}") from None
        return value

    @field_validator("sentinels")
    @classmethod
    def _sentinel_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for n, entry in enumerate(value):
            try:
                url = entry if "://" in entry else f"redis://{entry}"
                _check_url(url, schemes=("redis", "rediss"), host=True)
                if urlsplit(url).port is None:  # not Redis's 6379 in silence
                    raise ValueError("no port")
            except ValueError as exc:
                raise ValueError(f"entry {n + 1}: {exc} (host:port or a URL)") from None
        return value

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        if "://" in value:
            _check_url(value, schemes=("redis", "rediss"), host=True)
        elif value and not re.fullmatch(r"[\w.-]+", value):
            raise ValueError("a Sentinel master name, or a URL whose host is that name")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> RedisSettings:
        ways = [
            key
            for key, used in (
                ("redis.url", self.url),
                ("redis.cluster_nodes", self.cluster_nodes),
                ("redis.sentinels", self.sentinels),
            )
            if used
        ]
        if len(ways) > 1:
            raise ValueError(f"set only one of {' and '.join(ways)} (one way to reach Redis)")
        if self.sentinels and not self.service:
            raise ValueError("redis.service: the Sentinel master name is required with sentinels")
        if self.service and not self.sentinels:
            raise ValueError("redis.service: only used with redis.sentinels (none set)")
        return self


def _check_url(value: str, *, schemes: tuple[str, ...], host: bool = False) -> None:
    """A ValueError saying what is wrong with a Redis URL, never repeating it (it may hold
    a password)."""
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a port that is not a number
    except ValueError:
        raise ValueError("not a URL (the value is not shown: it may hold a password)") from None
    if parts.scheme not in schemes:
        names = {
            "redis": "redis://",
            "rediss": "rediss:// (TLS)",
            "unix": "unix:///path/to/socket",
        }
        shown = [names[s] for s in schemes]
        raise ValueError("use " + ", ".join(shown[:-1]) + " or " + shown[-1])
    if host and not parts.hostname:
        raise ValueError("no host")
    del port


class TlsSettings(Section):
    cert: Path = Path("var/tls/cert.pem")
    key: Path = Path("var/tls/key.pem")
    self_signed: bool = False
    """Create a self-signed pair at `cert`/`key` when missing (the dev start)."""

    def require_files(self) -> None:
        """Checked by the commands that serve TLS, not at load: `relay account` needs none."""
        if self.self_signed:
            return
        for name in ("cert", "key"):
            path: Path = getattr(self, name)
            if not path.is_file():
                raise ConfigError(f"tls.{name}: file not found: {path}")


class Listener(Section):
    address: HostPortField
    tls: Literal["starttls", "implicit"]


class SubmissionTimeouts(Section):
    command: DurationField = Duration(300.0)
    """Idle time allowed between two commands."""
    data: DurationField = Duration(600.0)
    """Time allowed for the whole DATA transfer."""
    tls_handshake: DurationField = Duration(30.0)
    """Time allowed for a TLS handshake, on either listener (implicit TLS: a session, and
    its place in the per-address count, only begins once it is done; STARTTLS: the
    handshake that follows the command). A failed or late handshake is one log line."""
    pre_auth: DurationField = Duration(60.0)
    """Time from connect within which a session must authenticate, whatever it sends
    meanwhile (a NOOP every few seconds does not keep a connection slot); then `421 4.7.0`."""

    _positive = field_validator("tls_handshake", "pre_auth")(_longer_than_zero)


class AuthGuardSettings(Section):
    """AUTH brute force: failures of one login or from one client address (IPv6: its /64)
    are counted in Redis; past `delay_after` each failure is answered slowly, past the lock
    thresholds the login or the address gets `454 4.7.0` for `lockout`."""

    delay_after: int = Field(3, ge=0)
    first_delay: DurationField = Duration(1.0)
    """Delay of the first slowed failure; it doubles with each further one, up to `max_delay`."""
    max_delay: DurationField = Duration(8.0)
    lock_after: int = Field(10, ge=1)
    """Failures of one login before it is locked (except from addresses it succeeded from)."""
    ip_lock_after: int = Field(30, ge=1)
    """Failures from one client address (whatever the logins) before it is locked."""
    window: DurationField = Duration(900.0)
    """A streak of failures is forgotten this long after its last failure."""
    lockout: DurationField = Duration(900.0)
    known_ip_for: DurationField = Duration(30 * 86400.0)
    """An address a login succeeded from stays exempt from that login's lock this long."""
    hash_queue: int = Field(128, ge=0)
    """Password checks from addresses unknown to their login that may wait for a hashing
    thread (process-wide); more get `454 4.7.0` at once instead of slowing every login."""
    hash_queue_known: int = Field(256, ge=1)
    """The same for addresses the login succeeded from (`known_ip_for`): served first."""


class SubmissionSettings(Section):
    listeners: list[Listener] = Field(
        default_factory=lambda: [
            Listener(address=HostPort(host="127.0.0.1", port=2587), tls="starttls"),
            Listener(address=HostPort(host="127.0.0.1", port=2465), tls="implicit"),
        ]
    )
    max_message_size: SizeField = 50_000_000
    max_recipients: int = Field(100, gt=0)
    max_line_length: int = Field(8192, ge=1000)
    """Longest line accepted in DATA, CRLF included (RFC 5321 says 1000; real mail breaks it)."""
    timeouts: SubmissionTimeouts = SubmissionTimeouts()
    max_connections: int = Field(1000, ge=1)
    """Open sessions of the node (all the processes of `relay run`) over all listeners; more
    get `421 4.3.2`."""
    max_connections_per_ip: int = Field(50, ge=1)
    """Open sessions of the node from one client address; more get `421 4.7.0`."""
    auth_guard: AuthGuardSettings = AuthGuardSettings()


class Egress(Section):
    ip: IPField
    helo: str


class DeliveryTimeouts(Section):
    connect: DurationField = Duration(30.0)
    command: DurationField = Duration(300.0)
    data: DurationField = Duration(600.0)


class DeliverySettings(Section):
    workers: int = Field(32, ge=0)
    """Concurrent deliveries in this process; 0 accepts mail without delivering it."""
    egress: list[Egress] = Field(default_factory=list)
    """Source IP + HELO name of each egress address; empty: the system picks the source."""
    routes: dict[str, HostPortField] = Field(default_factory=dict)
    """Static next hops: `"example.com"` or `"*"` → `"host:port"`. Others go by MX."""
    mx_port: int = Field(25, gt=0, lt=65536)
    """Destination port for MX-routed delivery (tests point it at a sink)."""
    allow_private_destinations: bool = False
    """Deliver to MX addresses that are not public (loopback, private, link-local). Off: a
    customer's DNS cannot aim our egress IPs at internal hosts. Static routes always go."""
    retry_interval: DurationField = Duration(900.0)
    max_age: DurationField = Duration(7 * 86400.0)
    """Past this age (held time excluded) a message still undelivered fails with a notice."""
    delay_notice_after: DurationField = Duration(3600.0)
    """Age at which the sender gets one delay notice for recipients still being retried."""
    lease: DurationField = Duration(60.0)
    """How long a claimed job stays with its worker unless renewed (every third of it while
    the delivery runs): a worker that dies loses its jobs to others this soon."""
    poll_interval: DurationField = Duration(1.0)
    timeouts: DeliveryTimeouts = DeliveryTimeouts()
    cooldown: DurationField = Duration(1800.0)
    """How long an egress IP rests for a destination domain after a block or failures."""
    cooldown_after: int = Field(3, ge=1)
    """Connection failures of one IP (that another IP got past) before it cools down."""
    failover_ips: int = Field(3, ge=1)
    """Egress IPs tried within one attempt when an IP is blocked or cannot connect."""
    max_inflight_bytes: SizeField = 24_000_000
    """Message bytes this process's deliveries hold at once (bodies read from the spool);
    an attempt waits for room; a larger message waits to be alone. 0: no limit."""
    max_connections_per_destination: int = Field(10, ge=1)
    """Concurrent sessions of the node (all its processes) to one destination (its set of MX
    hosts)."""
    session_idle: DurationField = Duration(5.0)
    """An idle session to a destination stays open this long for the next message."""
    session_max_messages: int = Field(100, ge=1)
    """Messages sent over one session before it is closed and a new one opened."""
    shaping: Path | None = None
    """Per-destination shaping rules (TOML, e.g. config/shaping.toml), reloaded on SIGHUP
    and `relay reload`; unset: one built-in rule from the settings above."""
    shaping_max_wait: DurationField = Duration(10.0)
    """Longest a delivery waits for its rule's rate; past it the job goes back to the queue
    for that time (no attempt counted), and the worker takes other mail."""
    tls_ca_file: Path | None = None
    """Extra trust anchors (PEM) for `tls = "verify"` and MTA-STS, besides the system's."""
    mta_sts: bool = True
    """Honour the MTA-STS policies of destination domains (RFC 8461) on the MX path (not
    for static routes)."""
    mta_sts_port: int = Field(443, gt=0, lt=65536)
    """HTTPS port of the policy hosts (443; tests serve policies on another)."""

    _positive = field_validator("retry_interval", "max_age")(_longer_than_zero)

    @field_validator("routes")
    @classmethod
    def _route_keys(cls, routes: dict[str, HostPort]) -> dict[str, HostPort]:
        return {key.strip().lower().rstrip("."): value for key, value in routes.items()}


class DnsSettings(Section):
    servers: list[HostPortField] = Field(default_factory=list)
    """Resolvers as `"ip:port"`; empty: the system resolvers."""
    timeout: DurationField = Duration(5.0)
    trust_anchors: list[str] = Field(default_factory=list)
    """DNSSEC trust anchors as zone-file lines (the root's DS, say); set, DANE (RFC 7672)
    applies to MX hosts with validated TLSA records. Empty: no DANE."""
    cache_size: int = Field(10_000, ge=0)
    """Answers delivery keeps (MX, A, AAAA, TLSA, MTA-STS TXT) for their TTL, negative
    answers included (RFC 2308); 0: no cache."""

    @field_validator("servers", mode="before")
    @classmethod
    def _default_port(cls, value: Any) -> Any:
        return [_with_dns_port(str(v)) for v in value] if isinstance(value, list) else value


def _with_dns_port(text: str) -> str:
    """`10.0.0.1` → `10.0.0.1:53`, `::1` → `[::1]:53`, `[::1]` → `[::1]:53`."""
    text = text.strip()
    if text.startswith("["):
        return text if "]:" in text else f"{text}:53"
    if text.count(":") > 1:
        return f"[{text}]:53"
    return text if ":" in text else f"{text}:53"


class SpoolSettings(Section):
    dir: Path = Path("var/spool")
    """Message bodies of this node, one file each (relay/spool/)."""
    max_inflight: SizeField = 1_000_000_000
    """DATA bytes being received at once by one process; past it new transfers get 452 4.3.1
    (declared SIZE counts before the bytes arrive). 0: no limit."""
    min_free: SizeField = 500_000_000
    """Free disk space below which DATA is refused with 452 4.3.1 (Postfix's queue_minfree)."""
    orphan_grace: DurationField = Duration(3600.0)
    """A spool file with no queued message this old is an orphan (`relay spool check`)."""


class SinkSettings(Section):
    address: HostPortField = HostPort(host="127.0.0.1", port=2525)
    dir: Path = Path("var/sink")


def _per_minute(value: Any) -> RateSpec:
    try:
        rate = RateSpec.parse(value)
    except QuotaError as exc:
        raise ValueError(str(exc)) from None
    if rate.period.seconds != 60:
        raise ValueError(f"give it per minute, e.g. 100/min (not {value!r})")
    return rate


PerMinuteField = Annotated[RateSpec, NoDecode, BeforeValidator(_per_minute), PlainSerializer(str)]


class QuotaSettings(Section):
    per_minute: PerMinuteField = RateSpec.parse("100/min")
    """Recipients per rolling minute that one plan allows when it does not say (plans add up)."""
    per_recipient: PerMinuteField = RateSpec.parse("100/min")
    """Messages per minute from one credential to one recipient address (contract 004, §6)."""
    new_account_daily: int = Field(1000, ge=0)
    """Daily quota of the plan `relay account add` creates when not given --daily; 0: none."""


class ListZone(Section):
    zone: str
    kind: Literal["ip", "domain"]
    """ip: egress IPs are looked up (RBL); domain: sender and link domains (SURBL, DBL)."""
    meanings: dict[str, str] = Field(default_factory=dict)
    """Return code → meaning, e.g. {"127.0.0.2" = "SBL"}; other 127/8 codes list too."""


class ReputationSettings(Section):
    zones: list[ListZone] = Field(default_factory=list)
    """Blocklists to watch. Empty: no lookups at all (the dev default: no internet)."""
    monitor_interval: DurationField = Duration(300.0)
    lookup_timeout: DurationField = Duration(2.0)
    cache_ttl: DurationField = Duration(300.0)
    data_check: bool = True
    """Check sender and link domains on the domain lists at DATA (554 5.7.1 when listed)."""
    data_check_deadline: DurationField = Duration(3.0)
    """Past this the message is accepted unchecked (lookups fail open)."""
    attribution: Literal["all", "share"] = "all"
    """On an egress IP listing, suspend every account that sent through it in the window,
    or only those whose share of its traffic is at least `attribution_share`."""
    attribution_share: float = Field(0.1, ge=0.0, le=1.0)
    attribution_window: DurationField = Duration(86400.0)
    second_offence_min: DurationField = Duration(5 * 86400.0)
    """Contract 004: a second block lasts at least 5 days."""
    offence_growth: float = Field(2.0, ge=1.0)
    deny_from_offence: int = Field(3, ge=2)
    operators: list[str] = Field(default_factory=list)
    """Alert recipients (IP listings, new suspensions)."""
    support: str = "your provider's support"
    """How customers reach support, written in their suspension notices."""
    notices_from: str = ""
    """From: of notices; default postmaster@hostname."""


class SenderAuthSettings(Section):
    spf: Literal["off", "warn", "enforce"] = "off"
    """At MAIL FROM, check that the sender domain's SPF authorizes our egress IPs: warn logs
    and adds an X-Relay-SPF header; enforce refuses with 550 5.7.23. DNS trouble passes."""
    spf_include: str = ""
    """The name customers include (`include:NAME`); default `_spf.<hostname>`."""
    spf_timeout: DurationField = Duration(3.0)
    dkim: bool = True
    """Sign with the key of the From: domain when `relay dkim add` made one (and the key
    belongs to the sending account)."""
    key_file: Path = Path("var/dkim.key")
    """Keys that encrypt DKIM private keys in Redis (AES-256-GCM): one base64 key of 32 bytes
    a line, the first encrypts, all decrypt. Not used when `key_env` is set."""
    create_key_file: bool = False
    """Create `key_file` (0600, a new key) at the first `relay dkim add` when missing: the dev
    start. Off in production, where every relay host must share one file."""
    key_env: str = ""
    """Name of an environment variable holding those keys instead (separated by spaces)."""
    identities: Literal["off", "warn", "enforce"] = "enforce"
    """MAIL FROM and every From: address must be a verified identity of the account
    (`relay domain`): enforce refuses with 550 5.7.1; warn logs `sender.unverified` and
    accepts (for migrations); off checks nothing and treats every sender as verified for
    notices. RET=FULL and NOTIFY=SUCCESS need a verified sender under warn and enforce."""


class EventsSettings(Section):
    retention: DurationField = Duration(30 * 86400.0)
    """How long a recipient's events stay queryable (`GET /v1/events`, `relay events`)."""
    idempotency_for: DurationField = Duration(86400.0)
    """How long the HTTP send API remembers an `Idempotency-Key` and its first answer."""


class WebhookSettings(Section):
    allow_private_targets: bool = False
    """POST to webhook URLs whose host resolves to a loopback, private or other non-public
    address (judged as MX addresses are); off, a customer cannot aim us at internal hosts."""
    retry_for: DurationField = Duration(86400.0)
    """An event an endpoint keeps refusing is retried this long, then given up (logged)."""
    first_retry: DurationField = Duration(10.0)
    """Wait after the first failure; it doubles with each failure, up to `max_retry`."""
    max_retry: DurationField = Duration(1800.0)
    timeout: DurationField = Duration(10.0)
    """Deadline of one POST (connect to the last byte of the answer)."""
    poll_interval: DurationField = Duration(1.0)
    """How often the dispatcher looks for new events of the webhooks it serves."""
    concurrency: int = Field(16, ge=1)
    """Webhooks of one process posted to at once (each one's events go in order)."""

    @field_validator("first_retry", "max_retry", "timeout", "poll_interval")
    @classmethod
    def _positive(cls, value: Duration) -> Duration:
        if value.seconds <= 0:
            raise ValueError("must be more than 0")
        return value


_CLAMD_ADDRESS = re.compile(r"unix:/\S+|/\S+|\[[0-9a-fA-F:.]+\]:\d{1,5}|[^:\s\[\]/]+:\d{1,5}")


class ClamdSettings(Section):
    """ClamAV's clamd, asked at DATA (relay/content/clamd.py): handed the spool file on its
    unix socket (FILDES), sent the content over TCP (INSTREAM)."""

    address: str
    """`unix:/run/clamav/clamd.ctl` (a bare absolute path too) or `127.0.0.1:3310`."""
    fdpass: bool = True
    """On a unix socket, hand clamd the open spool file instead of streaming its content (no
    copy, no temporary file in clamd); false: always stream. A clamd that refuses descriptors
    is streamed to from its first refusal on."""
    deadline: DurationField = Duration(30.0)
    """Time one scan may take (a 20 MB message takes well under a second locally)."""
    on_error: Literal["tempfail", "fail_open"] = "tempfail"
    """clamd down, slow or erroring: tempfail answers 451 4.7.0; fail_open accepts unscanned."""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not _CLAMD_ADDRESS.fullmatch(value.strip()):
            raise ValueError(f"not unix:/path or host:port: {value!r}")
        return value.strip()


class RspamdSettings(Section):
    """rspamd's normal worker, asked at DATA over HTTP (`/checkv2`, relay/content/rspamd.py)."""

    url: str
    """E.g. `http://127.0.0.1:11333`, or its unix socket `unix:/run/rspamd/normal.sock`."""
    deadline: DurationField = Duration(15.0)
    on_error: Literal["tempfail", "fail_open"] = "fail_open"
    settings_id: str | None = None
    """Sent as `Settings-ID`: the settings entry of rspamd that applies to the relay's mail
    (its outbound rules; README "Content scanning"). None: rspamd's defaults."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("unix:"):
            if not value.removeprefix("unix:").startswith("/"):
                raise ValueError(f"unix: needs an absolute socket path: {value!r}")
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) URL or unix:/path: {value!r}")
        return value

    @field_validator("settings_id")
    @classmethod
    def _settings_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
            raise ValueError(f"not a settings id (letters, digits, _ . -): {value!r}")
        return value


class ContentSettings(Section):
    """Malware and spam scanning at DATA, the quarantine, allow/deny lists (relay/content/)."""

    clamd: ClamdSettings | None = None
    """None (the dev default): no malware scan."""
    rspamd: RspamdSettings | None = None
    """None (the dev default): no spam scoring."""
    spam_quarantine: float = 6.0
    """rspamd score from which a message is held in the customer's quarantine (250)."""
    spam_reject: float = 15.0
    """rspamd score from which a message is refused (550 5.7.1), allow lists or not."""
    malware_retention: DurationField = Duration(365 * 86400.0)
    """How long a message carrying malware is kept (contract 004: one year)."""
    spam_retention: DurationField = Duration(30 * 86400.0)
    malware_suspend_after: int = Field(3, ge=0)
    """Malware messages of one account within `malware_window` that suspend it (0: never)."""
    malware_window: DurationField = Duration(86400.0)
    sweep_interval: DurationField = Duration(86400.0)
    """How often expired quarantined messages are deleted (one process of the node does it)."""
    digest_interval: DurationField = Duration(7 * 86400.0)
    """How often each account with quarantined mail gets its summary (0s: never)."""
    lists_refresh: DurationField = Duration(5.0)
    """How often a process re-reads which accounts have allow/deny lists at all: a first
    entry of an account takes effect within it; later changes at once."""

    @field_validator("spam_reject")
    @classmethod
    def _reject_over_quarantine(cls, value: float, info: Any) -> float:
        quarantine = info.data.get("spam_quarantine")
        if quarantine is not None and value < quarantine:
            raise ValueError("must not be below spam_quarantine")
        return value

    _positive = field_validator("sweep_interval")(_longer_than_zero)


class RunSettings(Section):
    processes: int = Field(0, ge=0)
    """Processes of `relay run`, each with the listeners (shared ports) and delivery workers;
    0: one per core. 1: a single process, no supervisor."""
    uvloop: bool = True
    """Run the event loop on uvloop when it is installed (libuv: faster I/O)."""

    def count(self) -> int:
        return self.processes or os.cpu_count() or 1


class HttpSettings(Section):
    """The HTTP listener of `relay run`: the JSON API, the web consoles, /metrics."""

    enabled: bool = False
    listen: HostPortField = HostPort(host="127.0.0.1", port=8080)
    secret_file: Path = Path("var/http.key")
    """Key that signs the session cookies; created (0600, random) at the first start when
    missing. Every process and node serving the same users must read the same key."""
    secret_env: str = ""
    """Name of an environment variable holding that key instead; set, `secret_file` is unused."""
    session_max_age: DurationField = Duration(8 * 3600.0)
    """A session cookie older than this is refused (log in again)."""
    secure_cookies: bool = True
    """Send the session cookie over HTTPS only (behind a TLS proxy); false for plain HTTP on
    loopback (dev)."""
    metrics_dir: Path = Path("var/metrics")
    """Where the processes of one node write their Prometheus counters (emptied at start)."""
    api_key_cache: DurationField = Duration(5.0)
    """A process takes an API key it verified this long without reading its record again
    (a revocation elsewhere takes effect within it); 0: read on every request."""


_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class NodeSettings(Section):
    """This node of the fleet: its name, and how it tells the others it is alive."""

    id: str = Field("", validate_default=True)
    """Names the node in Redis keys (its heartbeat, its leases, its quarantine) and in lease
    tokens, so it is a short token; unique in the fleet. Empty: the host name."""
    heartbeat: DurationField = Duration(2.0)
    """How often the node writes its record in Redis (and reads whether to drain)."""
    down_after: int = Field(5, ge=2)
    """Heartbeats missed before `relay node list` shows the node as down."""

    @field_validator("id")
    @classmethod
    def _token(cls, value: str) -> str:
        value = value or socket.gethostname()
        if not _NODE_ID.fullmatch(value):
            raise ValueError(
                f"not a node id: {value!r} (1 to 64 of A-Z a-z 0-9 . _ -; set [node] id when"
                " the host name is not one)"
            )
        return value

    _positive = field_validator("heartbeat")(_longer_than_zero)


class LogSettings(Section):
    format: Literal["console", "json"] = "console"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="RELAY_",
        env_nested_delimiter="__",
    )

    hostname: str = "relay.localhost"
    redis: RedisSettings = RedisSettings()
    tls: TlsSettings = TlsSettings()
    submission: SubmissionSettings = SubmissionSettings()
    delivery: DeliverySettings = DeliverySettings()
    spool: SpoolSettings = SpoolSettings()
    dns: DnsSettings = DnsSettings()
    sink: SinkSettings = SinkSettings()
    quota: QuotaSettings = QuotaSettings()
    reputation: ReputationSettings = ReputationSettings()
    sender_auth: SenderAuthSettings = SenderAuthSettings()
    content: ContentSettings = ContentSettings()
    log: LogSettings = LogSettings()
    run: RunSettings = RunSettings()
    events: EventsSettings = EventsSettings()
    webhooks: WebhookSettings = WebhookSettings()
    http: HttpSettings = HttpSettings()
    node: NodeSettings = Field(default_factory=dict, validate_default=True)
    """Validated at each load, not once at import: the default id is the host name."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init values; the environment overrides it.
        return (env_settings, init_settings)


def load_settings(path: Path | None) -> Settings:
    """Read the TOML file (if any) and the environment; raise ConfigError naming the key."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except SettingsError as exc:  # an environment value that is not valid JSON where JSON is due
        raise ConfigError(f"environment: {exc}") from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{key}: {message}" if key else message)
    return "; ".join(problems)
