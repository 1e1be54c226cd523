"""Per-destination traffic shaping as data (`config/shaping.toml`): pure.

Large mailbox providers each throttle in their own way; a relay that sends to them as to
everyone else collects `421 4.7.28`-style deferrals and, in the end, listings. A rule says
how one destination wants to be sent to: connections (per egress IP and in all, fleet-wide),
messages per connection, a paced rate per egress IP, the retry curve, the idle timeout,
the TLS mode, and reactions to its replies (suspend this IP for it, slow down, or move the
mail to another IP). KumoMTA's shaping file is the model; this is a smaller, typed version.

A destination gets one rule: the rule naming its domain, else the first rule with an MX
host suffix that one of its MX hosts ends with (so every domain hosted at Google shares
one rule), else the `*` rule. A rule's unset keys come from the `*` rule, then from the
built-in defaults (`delivery.retry_interval`, `delivery.session_max_messages`...).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from quota import Duration, QuotaError, RateSpec
from relay.config import DeliverySettings, DurationField
from relay.errors import ConfigError

__all__ = [
    "Action",
    "Reaction",
    "Shaping",
    "ShapingRule",
    "TlsMode",
    "load_shaping",
    "parse_shaping",
]

TlsMode = Literal["opportunistic", "required", "verify"]
"""opportunistic: STARTTLS when offered, certificate not checked, plain text if it fails;
required: STARTTLS must succeed (else the mail waits, 4.7.5), certificate not checked;
verify: required, and the certificate must be valid for the MX host name."""

Action = Literal["suspend", "slow", "move"]


def _rate(value: Any) -> RateSpec:
    try:
        return RateSpec.parse(value)
    except QuotaError as exc:
        raise ValueError(str(exc)) from None


def _rates(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


RateField = Annotated[RateSpec, BeforeValidator(_rate)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class ReactionSpec(_Strict):
    code: int | None = Field(None, ge=200, le=599)
    status: str | None = None
    """Enhanced status code, or its start: "4.7.28", "4.7." (RFC 3463)."""
    text: str | None = None
    """A regular expression searched in the reply text (case is ignored)."""
    action: Action
    duration: DurationField
    rate: RateField | None = None
    """For `slow`: the rate for this IP while it lasts."""

    @field_validator("status")
    @classmethod
    def _status(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[245](\.\d{1,3}){0,2}\.?", value):
            raise ValueError(f"not an enhanced status code or its start: {value!r}")
        return value

    @field_validator("text")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _complete(self) -> ReactionSpec:
        if self.code is None and self.status is None and self.text is None:
            raise ValueError("a reaction needs code, status or text to match")
        if self.action == "slow" and self.rate is None:
            raise ValueError("action 'slow' needs a rate")
        if self.duration.seconds <= 0:
            raise ValueError("duration must be longer than 0s")
        return self


class RuleSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    domains: list[str] = Field(default_factory=list)
    """Destination domains, or "*" for the default rule."""
    mx: list[str] = Field(default_factory=list)
    """MX host name suffixes, e.g. ".google.com"."""
    max_connections_per_ip: int | None = Field(None, ge=1)
    max_connections: int | None = Field(None, ge=1)
    """Sessions to the destination at once over the whole fleet (every node)."""
    max_messages_per_connection: int | None = Field(None, ge=1)
    rate_per_ip: Annotated[list[RateField] | None, BeforeValidator(_rates)] = None
    """Messages per egress IP, paced: "100/min" sends one every 0.6 s from each IP."""
    retry: list[DurationField] | None = Field(None, min_length=1)
    idle_timeout: DurationField | None = None
    tls: TlsMode | None = None
    reactions: list[ReactionSpec] = Field(default_factory=list)

    @field_validator("domains", "mx")
    @classmethod
    def _names(cls, values: list[str]) -> list[str]:
        return [v.strip().lower().rstrip(".") for v in values]

    @field_validator("retry")
    @classmethod
    def _positive(cls, values: list[Duration] | None) -> list[Duration] | None:
        if values is not None and any(v.seconds <= 0 for v in values):
            raise ValueError("every retry interval must be longer than 0s")
        return values

    @model_validator(mode="after")
    def _matches(self) -> RuleSpec:
        if not self.domains and not self.mx:
            raise ValueError('a rule needs domains (or "*") or mx suffixes to match')
        return self


class ShapingFile(_Strict):
    rule: list[RuleSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ShapingFile:
        names: set[str] = set()
        owner: dict[str, str] = {}
        for spec in self.rule:
            if spec.name in names:
                raise ValueError(f"rule name {spec.name!r} is used twice")
            names.add(spec.name)
            for domain in spec.domains:
                if domain in owner:
                    raise ValueError(
                        f"domain {domain!r} is in rules {owner[domain]!r} and {spec.name!r}"
                    )
                owner[domain] = spec.name
        return self


@dataclass(frozen=True)
class Reaction:
    code: int | None
    status: str | None
    text: re.Pattern[str] | None
    action: Action
    duration: Duration
    rate: RateSpec | None = None

    def matches(self, code: int, status: str, text: str) -> bool:
        return (
            (self.code is None or self.code == code)
            and (
                self.status is None or status == self.status or _status_starts(status, self.status)
            )
            and (self.text is None or self.text.search(text) is not None)
        )

    def __str__(self) -> str:
        what = " ".join(
            part
            for part in (
                str(self.code) if self.code else "",
                self.status or "",
                f"/{self.text.pattern}/" if self.text else "",
            )
            if part
        )
        how = f"{self.action} {self.duration}" + (f" at {self.rate}" if self.rate else "")
        return f"{what} -> {how}"


def _status_starts(status: str, prefix: str) -> bool:
    return prefix.endswith(".") and status.startswith(prefix)


@dataclass(frozen=True)
class ShapingRule:
    """One destination's rule with every value resolved (the `*` rule and defaults in)."""

    name: str
    max_connections_per_ip: int | None
    max_connections: int | None
    max_messages_per_connection: int
    rates: tuple[RateSpec, ...]
    retry: tuple[Duration, ...]
    idle_timeout: Duration
    tls: TlsMode
    reactions: tuple[Reaction, ...]
    shared: bool = True
    """Its limits hold for all its destinations together (a provider's rule); False for
    the `*` rule, whose limits and reactions hold for each destination domain apart."""

    def scope(self, domain: str) -> str:
        """What its fleet-wide limits count: the rule, or one domain under the `*` rule."""
        return self.name if self.shared else f"{self.name}/{domain.lower().rstrip('.')}"

    @property
    def gated(self) -> bool:
        """Needs the fleet-wide gate (Redis) before each message."""
        return bool(
            self.max_connections_per_ip or self.max_connections or self.rates or self.reactions
        )

    def reaction_to(self, code: int, status: str, text: str) -> Reaction | None:
        for reaction in self.reactions:
            if reaction.matches(code, status, text):
                return reaction
        return None


@dataclass(frozen=True)
class Shaping:
    """Every rule of the file, ready to match destinations."""

    by_domain: dict[str, ShapingRule]
    by_mx: tuple[tuple[str, ShapingRule], ...]
    default: ShapingRule
    source: str = "built-in"

    def rule_for(self, domain: str, mx_hosts: Iterable[str] = ()) -> ShapingRule:
        name = domain.strip().lower().rstrip(".")
        if (rule := self.by_domain.get(name)) is not None:
            return rule
        hosts = [h.lower().rstrip(".") for h in mx_hosts]
        for suffix, rule in self.by_mx:
            if any(_ends_with(host, suffix) for host in hosts):
                return rule
        return self.default

    @property
    def rules(self) -> list[ShapingRule]:
        seen: dict[str, ShapingRule] = {self.default.name: self.default}
        for rule in [*self.by_domain.values(), *(r for _, r in self.by_mx)]:
            seen.setdefault(rule.name, rule)
        return list(seen.values())


def _ends_with(host: str, suffix: str) -> bool:
    if suffix.startswith("."):
        return host.endswith(suffix)
    return host == suffix or host.endswith("." + suffix)


def parse_shaping(text: str, delivery: DeliverySettings, source: str = "shaping") -> Shaping:
    """Rules from TOML text; ConfigError naming the rule and the key when it is not valid."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    try:
        spec = ShapingFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc, data)}") from None
    return _resolve(spec.rule, delivery, source)


def load_shaping(path: Path | None, delivery: DeliverySettings) -> Shaping:
    """The rules of `path`; with no path, one built-in `*` rule from the delivery settings."""
    if path is None or str(path) == "":
        return _resolve([], delivery, "built-in")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"delivery.shaping: cannot read {path}: {exc.strerror or exc}") from None
    return parse_shaping(text, delivery, str(path))


def _resolve(specs: Sequence[RuleSpec], delivery: DeliverySettings, source: str) -> Shaping:
    star = next((s for s in specs if "*" in s.domains), None)
    builtin = ShapingRule(
        name="*",
        max_connections_per_ip=None,
        max_connections=None,
        max_messages_per_connection=delivery.session_max_messages,
        rates=(),
        retry=(delivery.retry_interval,),
        idle_timeout=delivery.session_idle,
        tls="opportunistic",
        reactions=(),
        shared=False,
    )
    default = _merge(builtin, star) if star is not None else builtin
    by_domain: dict[str, ShapingRule] = {}
    by_mx: list[tuple[str, ShapingRule]] = []
    for spec in specs:
        if spec is star:
            continue
        rule = _merge(default, spec)
        for domain in spec.domains:
            by_domain[domain] = rule
        for suffix in spec.mx:
            by_mx.append((suffix, rule))
    return Shaping(by_domain, tuple(by_mx), default, source)


def _merge(base: ShapingRule, spec: RuleSpec) -> ShapingRule:
    def pick(value: Any, fallback: Any) -> Any:
        return fallback if value is None else value

    reactions = tuple(
        Reaction(
            code=r.code,
            status=r.status,
            text=re.compile(r.text, re.IGNORECASE) if r.text is not None else None,
            action=r.action,
            duration=r.duration,
            rate=r.rate,
        )
        for r in spec.reactions
    )
    return ShapingRule(
        name=spec.name,
        max_connections_per_ip=pick(spec.max_connections_per_ip, base.max_connections_per_ip),
        max_connections=pick(spec.max_connections, base.max_connections),
        max_messages_per_connection=pick(
            spec.max_messages_per_connection, base.max_messages_per_connection
        ),
        rates=tuple(spec.rate_per_ip) if spec.rate_per_ip is not None else base.rates,
        retry=tuple(spec.retry) if spec.retry is not None else base.retry,
        idle_timeout=pick(spec.idle_timeout, base.idle_timeout),
        tls=pick(spec.tls, base.tls),
        reactions=reactions + base.reactions,
        shared="*" not in spec.domains,
    )


def _describe(exc: ValidationError, data: dict[str, Any]) -> str:
    """`rule 'gmail': max_connections: Input should be greater than or equal to 1`."""
    found = data.get("rule")
    rules: list[Any] = found if isinstance(found, list) else []
    problems = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "rule" and isinstance(loc[1], int):
            index = loc[1]
            raw = rules[index] if index < len(rules) else {}
            name = raw.get("name") if isinstance(raw, dict) else None
            where = f"rule {name!r}" if name else f"rule #{index + 1}"
            loc = loc[2:]
        key = ".".join(str(part) for part in loc)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(": ".join(part for part in (where, key, message) if part))
    return "; ".join(problems)
