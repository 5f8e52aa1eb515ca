"""Typed configuration, read from TOML.

Every key is validated on load; a bad key or value raises :class:`ConfigError` whose
message names the key, so that ``mailhaven serve`` can stop with one clear line and
no traceback. Durations are written ``30s``, ``5m``, ``4h``, ``5d``; sizes ``20K``,
``50M``, ``1G``.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """The configuration file names an unknown key or holds a bad value."""


_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)B?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_size(value: str | int, key: str = "size") -> int:
    """``"50M"`` -> 52428800. Integers are taken as bytes."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a size like 50M, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{key}: size must not be negative")
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ConfigError(f"{key}: expected a size like 20K, 50M or 1G, got {value!r}")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).upper()]


def parse_duration(value: str | int | float, key: str = "duration") -> float:
    """``"5m"`` -> 300.0 seconds. Bare numbers are seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration like 30s, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION_RE.match(str(value))
    if not m:
        raise ConfigError(f"{key}: expected a duration like 30s, 5m, 4h or 5d, got {value!r}")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_hostport(value: str, key: str) -> tuple[str, int] | None:
    """``"127.0.0.1:2525"`` / ``"[::1]:25"`` -> (host, port); ``""`` -> None (disabled)."""
    if value == "":
        return None
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise ConfigError(f"{key}: expected host:port, got {value!r}")
    return host or "0.0.0.0", int(port)


@dataclass(frozen=True, kw_only=True)
class ListenConfig:
    """Listener addresses; an empty string disables a listener."""

    smtp: str = "127.0.0.1:2525"
    submission: str = "127.0.0.1:2587"
    submissions: str = "127.0.0.1:2465"
    imap: str = "127.0.0.1:2143"
    imaps: str = "127.0.0.1:2993"
    pop3: str = "127.0.0.1:2110"
    pop3s: str = "127.0.0.1:2995"
    managesieve: str = "127.0.0.1:24190"
    """RFC 5804 (standard port 4190; 2xxxx like the others to stay clear of a system Dovecot)."""
    http: str = "127.0.0.1:8080"
    acme_http: str = ""
    """Plain HTTP answering only ACME http-01 challenges (RFC 8555 8.3), usually ``:80``."""

    def address(self, name: str) -> tuple[str, int] | None:
        return parse_hostport(getattr(self, name), f"listen.{name}")


@dataclass(frozen=True, kw_only=True)
class TLSConfig:
    """Certificate and key; both empty means a self-signed pair generated in the data dir."""

    cert: str = ""
    key: str = ""
    ca_file: str = ""
    """CA bundle outbound TLS trusts where a certificate must verify (MTA-STS policy hosts
    and MX hosts, ``[relay] require_tls``, implicit TLS to a smarthost); empty: the system's."""


@dataclass(frozen=True, kw_only=True)
class ACMEConfig:
    """Certificates from an ACME CA (RFC 8555, certs/); an empty directory turns it off."""

    directory: str = ""
    """The CA's directory URL (``https://acme-v02.api.letsencrypt.org/directory``)."""
    email: str = ""
    """The account's contact address."""
    ca_file: str = ""
    """Trust for the ACME server's own HTTPS (test CAs); empty: the system's."""
    challenge: str = "tls-alpn-01"
    """``tls-alpn-01`` (RFC 8737, answered on every implicit-TLS listener: 443 for a real
    CA) or ``http-01`` (on the http listener and ``[listen] acme_http``: port 80)."""


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    backend: str = "sqlite"
    dsn: str = ""
    schema: str = "mailhaven"
    """PostgreSQL schema holding the tables (one database can hold several installations)."""
    pool_size: int = 10
    """PostgreSQL connections per process (plus one listening for other nodes' changes)."""


@dataclass(frozen=True, kw_only=True)
class LimitsConfig:
    message_size: int = 50 * 1024 * 1024
    recipients: int = 100
    line_length: int = 4096
    connections: int = 1000
    """Connections per listener."""
    connections_per_ip: int = 100
    """Connections per client address (IPv6: per /64), logged in or not."""
    unauthenticated_per_ip: int = 50
    """Connections per client address that have not logged in (every HTTP connection)."""
    connections_per_network: int = 500
    """Connections per IPv4 /24 or IPv6 /64: no one network takes a whole listener."""
    login_timeout: float = 60.0
    """Total time from connecting to logging in, not extended by traffic (on port 25: to
    the start of each message's content)."""
    min_transfer_rate: int = 1024
    """Bytes per second that SMTP DATA/BDAT, IMAP literals and HTTP request bodies must
    average once ``transfer_grace`` has passed; 0 turns the check off."""
    transfer_grace: float = 10.0
    http_header_timeout: float = 10.0
    """Time for an HTTP request's line and headers to arrive, from connecting or from the
    previous response."""
    http_concurrency: int = 200
    """HTTP requests handled at once per listener; more wait for their turn (503 past it)."""
    auth_failures: int = 5
    smtp_idle: float = 300.0
    smtp_data_idle: float = 180.0
    imap_idle: float = 1800.0
    pop3_idle: float = 600.0
    pop3_lock_lease: float = 60.0   # a crashed process's POP3 maildrop locks expire after this
    managesieve_idle: float = 600.0
    imap_literal: int = 64 * 1024 * 1024
    errors_per_session: int = 50


@dataclass(frozen=True, kw_only=True)
class SecurityConfig:
    # Like Dovecot's login_trusted_networks for plaintext auth: loopback counts as secure.
    loopback_is_secure: bool = True
    # The login throttle every protocol shares (auth/throttle.py); counts live in the store.
    # Failed logins from one address (IPv6: its /64) within login_window before it is
    # blocked for login_block; and from one address for one account name. 0: no limit.
    login_failures_per_address: int = 20
    login_failures_per_account: int = 5
    login_window: float = 3600.0
    login_block: float = 3600.0
    # Delay of the answer to a failure: login_delay, doubling per failure up to login_max_delay.
    login_delay: float = 1.0
    login_max_delay: float = 15.0


@dataclass(frozen=True, kw_only=True)
class QueueConfig:
    retry: tuple[float, ...] = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0)
    warn_after: float = 4 * 3600.0
    expire: float = 5 * 86400.0
    concurrency: int = 50
    per_domain: int = 5
    lease: float = 300.0
    poll: float = 1.0


@dataclass(frozen=True, kw_only=True)
class DNSConfig:
    nameservers: tuple[str, ...] = ()
    timeout: float = 5.0


@dataclass(frozen=True, kw_only=True)
class RelayConfig:
    """Smarthost for all outbound mail, and per-domain routes (domain -> host:port)."""

    host: str = ""
    username: str = ""
    password: str = ""
    tls: str = "opportunistic"  # "opportunistic" | "required" | "implicit" | "none"
    routes: dict[str, str] = field(default_factory=dict)
    require_tls: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SMTPConfig:
    """The SMTP server's own switches (limits live in [limits])."""

    # Offer AUTH on the port-25 listener too (RFC 4954); an authenticated session may
    # then relay, as on submission. Off by default: port 25 is for other MTAs.
    auth_on_smtp: bool = False
    # Processes that accept on the port-25 listener (smtp/workers.py); 0: the main
    # process does. Each uses one core; the main process keeps the other protocols.
    workers: int = 0
    # A worker whose event loop has not run for this many seconds (hung in a loop, stopped)
    # is killed and replaced: its open sessions are cut, nothing it acknowledged is lost.
    worker_hang_timeout: float = 60.0


@dataclass(frozen=True, kw_only=True)
class HTTPConfig:
    """The web listener behind a reverse proxy."""

    public_url: str = ""
    """The base URL clients use (``https://mail.example.org``); JMAP's session resource
    advertises its URLs under it. Empty: taken from each request (its Host and scheme)."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For, -Proto and
    -Host are believed: the client address in logs and throttles, https, the host."""


@dataclass(frozen=True, kw_only=True)
class MTASTSConfig:
    """The MTA-STS policy served at ``https://mta-sts.<domain>/.well-known/mta-sts.txt``
    for every local domain (RFC 8461 3.2)."""

    mode: str = "enforce"
    """``enforce``, ``testing`` (senders report failures but deliver) or ``none``."""
    max_age: float = 604800.0
    """How long senders may cache the policy (RFC 8461 3.2: at most 31557600 seconds)."""
    outbound: bool = True
    """Honour recipient domains' MTA-STS policies when delivering (queue/mtasts.py)."""


@dataclass(frozen=True, kw_only=True)
class DANEConfig:
    """DANE for outbound SMTP (RFC 7672, queue/dane.py); needs a DNSSEC-validating resolver
    in ``[dns] nameservers`` (answers without the AD bit never count)."""

    enabled: bool = True


@dataclass(frozen=True, kw_only=True)
class TraceConfig:
    """Protocol traces (net/trace.py) in DATA/trace, passwords and SASL data redacted."""

    listeners: tuple[str, ...] = ()
    """Listeners (``imap``, ``submission``...) whose every connection is traced."""
    accounts: tuple[str, ...] = ()
    """Accounts whose connections are traced from their login on."""


@dataclass(frozen=True, kw_only=True)
class FilterConfig:
    """Inbound trust checks (filter/) of mail from unauthenticated port-25 peers."""

    enabled: bool = True
    spf: bool = True
    dkim: bool = True
    dmarc: bool = True
    dmarc_enforce: bool = True
    """Refuse DMARC ``p=reject`` failures with 550 5.7.1 and file ``quarantine`` ones in
    Junk; false: only report them in Authentication-Results."""
    timeout: float = 10.0
    """Upper bound for each check's DNS work on one message."""
    dkim_max_size: int = 0
    """Larger messages are not DKIM-verified (``dkim=policy``); 0: every size is (the body
    hash is computed from the spooled file a piece at a time, memory does not grow)."""
    arc: bool = True
    """Verify ARC chains (RFC 8617, filter/arc.py)."""
    arc_max_size: int = 4 * 1024 * 1024
    """Larger messages get no ARC verdict (dkimpy's ARC verifier reads a message whole)."""
    arc_trusted: tuple[str, ...] = ()
    """ARC sealers (``lists.example``) whose passing chain with dmarc=pass overrides a
    local DMARC failure."""


@dataclass(frozen=True, kw_only=True)
class DmarcReportConfig:
    """DMARC aggregate reports (RFC 7489 7.2, filter/dmarcreports.py)."""

    send: bool = True
    """Send a daily report to each domain's ``rua`` about the mail we received from it."""
    org_name: str = ""
    """``org_name`` in our reports; empty: the hostname."""
    report_from: str = ""
    """From: and envelope sender of our reports; empty: ``dmarc-noreply@<hostname>``."""
    receive: str = ""
    """A local address whose incoming reports (zip, gzip or XML attachments) about our
    domains are parsed and kept for ``mailhaven dmarc reports DOMAIN``."""


@dataclass(frozen=True, kw_only=True)
class SpamConfig:
    """The built-in spam filter (filter/spam/), run with the inbound checks ([filter])."""

    enabled: bool = True
    junk_score: float = 5.0
    """At this score the message gets ``X-Spam-Status: Yes`` and is filed in Junk."""
    reject_score: float = 15.0
    """At this score it is refused with 550 5.7.1."""
    greylist: bool = False
    """Answer 451 4.7.1 to a message scoring ``greylist_score`` or more the first time its
    client network, sender and recipients are seen; a retry after ``greylist_delay`` passes."""
    greylist_score: float = 3.0
    greylist_delay: float = 300.0
    dnsbl: tuple[str, ...] = ("zen.spamhaus.org",)
    """DNS block lists of the client address (RFC 5782); each listing adds ``dnsbl_points``."""
    dnsbl_points: float = 3.0
    dnswl: tuple[str, ...] = ("list.dnswl.org",)
    """DNS allow lists; a listing subtracts ``dnswl_points``."""
    dnswl_points: float = 2.0
    bayes: bool = True
    bayes_min_messages: int = 10
    """Spam and ham messages a classifier must have learnt (each) before it is asked."""


@dataclass(frozen=True, kw_only=True)
class RateLimitConfig:
    """Messages per ``window`` (filter/ratelimit.py), counted in the store so every process
    and PostgreSQL node shares them; over a limit the command gets 451 4.7.1. 0: no limit."""

    window: float = 3600.0
    messages_per_address: int = 1000
    """Port 25: MAIL FROM commands per client address (IPv6: per /64)."""
    messages_per_sender_domain: int = 2000
    """Port 25: MAIL FROM commands per envelope sender domain (the null sender is not counted)."""
    account_messages: int = 300
    """Submission: messages per account (a stolen password cannot spam the world)."""
    account_recipients: int = 1500
    """Submission: recipients per account."""
    exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Client networks (CIDR) the port-25 limits do not count (as Postfix's mynetworks);
    the account limits count every login, wherever it comes from."""


@dataclass(frozen=True, kw_only=True)
class RspamdConfig:
    """rspamd as the spam engine (filter/rspamd.py) for port-25 mail; empty url: off."""

    url: str = ""
    """``http://127.0.0.1:11333`` (its normal worker)."""
    timeout: float = 15.0
    unreachable: str = "accept"
    """``accept`` (deliver unscanned, logged) or ``tempfail`` (451 4.3.0)."""


@dataclass(frozen=True, kw_only=True)
class ClamdConfig:
    """Virus scanning through clamd (filter/clamd.py) for port-25 mail; empty socket: off."""

    socket: str = ""
    """A Unix socket path (``/run/clamav/clamd.ctl``) or ``host:port``."""
    timeout: float = 30.0
    max_size: int = 25 * 1024 * 1024
    """Larger messages are not scanned (clamd's own StreamMaxLength is 25M)."""
    unreachable: str = "accept"
    """``accept`` (deliver unscanned, logged) or ``tempfail`` (451 4.3.0)."""


@dataclass(frozen=True, kw_only=True)
class SieveConfig:
    """Users' Sieve scripts: the ManageSieve quotas and the limits of a run at delivery."""

    max_scripts: int = 16
    """Scripts per account (ManageSieve answers ``NO (QUOTA/MAXSCRIPTS)`` past it)."""
    max_script_size: int = 64 * 1024
    """Octets per script (``NO (QUOTA/MAXSIZE)``)."""
    max_redirects: int = 4
    """redirect actions one message may take (RFC 5228 4.2: implementations cap it)."""
    spamtest_header: str = "X-Spam-Score"
    """The field whose number RFC 5235 spamtest reads (empty: every message untested)."""
    spamtest_max: float = 10.0
    """The score that maps to spamtest 10 (:percent 100); 0 or less maps to 1."""
    virustest_header: str = "X-Virus-Score"
    virustest_max: float = 5.0
    """The score that maps to virustest 5 (infected)."""


@dataclass(frozen=True, kw_only=True)
class Config:
    hostname: str = "localhost"
    data_dir: Path = Path("data")
    listen: ListenConfig = field(default_factory=ListenConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    acme: ACMEConfig = field(default_factory=ACMEConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    dns: DNSConfig = field(default_factory=DNSConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    smtp: SMTPConfig = field(default_factory=SMTPConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    trace: TraceConfig = field(default_factory=TraceConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    dmarc: DmarcReportConfig = field(default_factory=DmarcReportConfig)
    mta_sts: MTASTSConfig = field(default_factory=MTASTSConfig)
    dane: DANEConfig = field(default_factory=DANEConfig)
    spam: SpamConfig = field(default_factory=SpamConfig)
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    rspamd: RspamdConfig = field(default_factory=RspamdConfig)
    clamd: ClamdConfig = field(default_factory=ClamdConfig)
    sieve: SieveConfig = field(default_factory=SieveConfig)
    log_level: str = "info"
    log_format: str = "text"  # "text" | "json"
    event_loop: str = "uvloop"
    """"uvloop" (libuv; stdlib asyncio where it is not installed) or "asyncio"."""

    def is_trusted(self, peer_ip: str) -> bool:
        """Does a connection from ``peer_ip`` count as secure for plaintext passwords?"""
        if not self.security.loopback_is_secure:
            return False
        try:
            return ipaddress.ip_address(peer_ip.split("%")[0]).is_loopback
        except ValueError:
            return peer_ip in ("", "unix")


_SIZE_KEYS = {"message_size", "imap_literal", "min_transfer_rate", "dkim_max_size", "arc_max_size", "max_size",
              "max_script_size"}
_DURATION_KEYS = {
    "smtp_idle", "smtp_data_idle", "imap_idle", "pop3_idle", "warn_after", "expire",
    "lease", "poll", "timeout", "login_timeout", "transfer_grace", "http_header_timeout",
    "login_window", "login_block", "login_delay", "login_max_delay", "pop3_lock_lease",
    "max_age", "managesieve_idle",
    "greylist_delay",
    "window",
}


def _coerce(section: str, name: str, default: Any, value: Any) -> Any:
    key = f"{section}.{name}" if section else name
    if name in _SIZE_KEYS:
        return parse_size(value, key)
    if name in _DURATION_KEYS:
        return parse_duration(value, key)
    if section == "queue" and name == "retry":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{key}: expected a non-empty list of durations")
        return tuple(parse_duration(v, key) for v in value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{key}: expected a non-negative whole number, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings")
        return tuple(value)
    if isinstance(default, dict):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{key}: expected a table of strings")
        return dict(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported value {value!r}")


def _build_section(section: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{section}: expected a table")
    defaults = cls()
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in known:
            raise ConfigError(f"{section}.{name}: unknown key")
        values[name] = _coerce(section, name, getattr(defaults, name), value)
    return replace(defaults, **values)


_SECTIONS: dict[str, type] = {
    "listen": ListenConfig,
    "tls": TLSConfig,
    "acme": ACMEConfig,
    "store": StoreConfig,
    "limits": LimitsConfig,
    "security": SecurityConfig,
    "queue": QueueConfig,
    "dns": DNSConfig,
    "relay": RelayConfig,
    "smtp": SMTPConfig,
    "http": HTTPConfig,
    "trace": TraceConfig,
    "filter": FilterConfig,
    "dmarc": DmarcReportConfig,
    "mta_sts": MTASTSConfig,
    "dane": DANEConfig,
    "spam": SpamConfig,
    "ratelimit": RateLimitConfig,
    "rspamd": RspamdConfig,
    "clamd": ClamdConfig,
    "sieve": SieveConfig,
}


def config_from_dict(raw: dict[str, Any], data_dir: Path) -> Config:
    values: dict[str, Any] = {"data_dir": data_dir}
    for key, value in raw.items():
        if key in _SECTIONS:
            values[key] = _build_section(key, _SECTIONS[key], value)
        elif key in ("hostname", "log_level", "log_format", "event_loop"):
            values[key] = _coerce("", key, "", value)
        else:
            raise ConfigError(f"{key}: unknown key")
    config = Config(**values)
    _validate(config)
    return config


def _validate(config: Config) -> None:
    for f in fields(ListenConfig):
        config.listen.address(f.name)
    if config.store.backend not in ("sqlite", "postgres"):
        raise ConfigError(f"store.backend: expected 'sqlite' or 'postgres', got {config.store.backend!r}")
    if config.store.backend == "postgres" and not config.store.dsn:
        raise ConfigError("store.dsn: required when store.backend is 'postgres'")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,50}", config.store.schema):
        raise ConfigError(f"store.schema: expected a lower-case SQL name, got {config.store.schema!r}")
    if config.store.pool_size < 1:
        raise ConfigError("store.pool_size: must be at least 1")
    if bool(config.tls.cert) != bool(config.tls.key):
        raise ConfigError("tls: set both cert and key, or neither")
    for name in ("cert", "key", "ca_file"):
        path = getattr(config.tls, name)
        if path and not Path(path).is_file():
            raise ConfigError(f"tls.{name}: no such file {path!r}")
    if config.acme.challenge not in ("tls-alpn-01", "http-01"):
        raise ConfigError("acme.challenge: expected 'tls-alpn-01' or 'http-01'")
    if config.acme.directory and not config.acme.directory.startswith(("https://", "http://")):
        raise ConfigError(f"acme.directory: expected a URL, got {config.acme.directory!r}")
    if config.acme.ca_file and not Path(config.acme.ca_file).is_file():
        raise ConfigError(f"acme.ca_file: no such file {config.acme.ca_file!r}")
    for name in config.trace.listeners:
        if name not in {f.name for f in fields(ListenConfig)}:
            raise ConfigError(f"trace.listeners: no listener named {name!r}")
    if config.smtp.workers > 64:
        raise ConfigError("smtp.workers: at most 64")
    if config.smtp.worker_hang_timeout < 2:
        raise ConfigError("smtp.worker_hang_timeout: at least 2 seconds")
    for network in config.http.trusted_proxies:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"http.trusted_proxies: not an address or network: {network!r}") from None
    if config.http.public_url and not re.fullmatch(r"https?://[^/\s]+/?", config.http.public_url):
        raise ConfigError(f"http.public_url: expected https://host[:port], got {config.http.public_url!r}")
    if config.relay.tls not in ("opportunistic", "required", "implicit", "none"):
        raise ConfigError("relay.tls: expected opportunistic, required, implicit or none")
    if not 0 < config.filter.timeout <= 300:
        raise ConfigError("filter.timeout: expected a duration above 0s and at most 5m")
    for network in config.ratelimit.exempt:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"ratelimit.exempt: not an address or network: {network!r}") from None
    if not 0 < config.ratelimit.window <= 7 * 86400:
        raise ConfigError("ratelimit.window: expected a duration above 0s and at most 7d")
    if config.rspamd.url and not re.fullmatch(r"http://[^/\s:]+(:\d{1,5})?(/\S*)?", config.rspamd.url):
        raise ConfigError(f"rspamd.url: expected http://host:port, got {config.rspamd.url!r}")
    if config.clamd.socket and not config.clamd.socket.startswith("/"):
        parse_hostport(config.clamd.socket, "clamd.socket")
    for section in ("rspamd", "clamd"):
        scanner = getattr(config, section)
        if scanner.unreachable not in ("accept", "tempfail"):
            raise ConfigError(f"{section}.unreachable: expected 'accept' or 'tempfail'")
        if not 0 < scanner.timeout <= 300:
            raise ConfigError(f"{section}.timeout: expected a duration above 0s and at most 5m")
    if config.mta_sts.mode not in ("enforce", "testing", "none"):
        raise ConfigError("mta_sts.mode: expected 'enforce', 'testing' or 'none'")
    if not 0 <= config.mta_sts.max_age <= 31557600:  # RFC 8461 3.2
        raise ConfigError("mta_sts.max_age: at most 31557600 seconds (one year)")
    _validate_spam(config.spam)
    if config.event_loop not in ("uvloop", "asyncio"):
        raise ConfigError("event_loop: expected 'uvloop' or 'asyncio'")
    if config.log_format not in ("text", "json"):
        raise ConfigError("log_format: expected 'text' or 'json'")
    if config.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level: expected debug, info, warning or error")


_ZONE = re.compile(r"(?=.{1,200}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}\.?", re.IGNORECASE)


def _validate_spam(spam: SpamConfig) -> None:
    if spam.junk_score >= spam.reject_score:
        raise ConfigError(f"spam.junk_score: must be below spam.reject_score ({spam.reject_score:g})")
    if spam.greylist and spam.greylist_score > spam.reject_score:
        raise ConfigError("spam.greylist_score: must not be above spam.reject_score")
    for key in ("dnsbl", "dnswl"):
        for zone in getattr(spam, key):
            if not _ZONE.fullmatch(zone):
                raise ConfigError(f"spam.{key}: not a DNS zone name: {zone!r}")
    for key in ("dnsbl_points", "dnswl_points"):
        if getattr(spam, key) < 0:
            raise ConfigError(f"spam.{key}: must not be negative")
    if spam.bayes_min_messages < 1:
        raise ConfigError("spam.bayes_min_messages: at least 1")


def load_config(data_dir: Path | str = "data", config_file: Path | str | None = None) -> Config:
    """Load ``config_file``, or ``DATA/mailhaven.toml`` when present, or the defaults."""
    data = Path(data_dir)
    path = Path(config_file) if config_file else data / "mailhaven.toml"
    if config_file is None and not path.exists():
        return config_from_dict({}, data)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config_from_dict(raw, data)
