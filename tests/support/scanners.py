"""Real clamd and rspamd for the tests, on loopback, with signatures and rules made here.

Never the official databases: clamd loads only an EICAR signature (whole-file MD5 and byte
pattern) and one custom byte-pattern signature; rspamd loads its stock modules with the DNS
ones and those an outbound scanner has no use for off (`OUTBOUND_OFF`), plus a body regexp
worth 100 points (reject) and a Subject map worth 8 points (between the relay's test
thresholds). `scripts/install-scanners.sh` (run by `make test`) installs both from Debian.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = [
    "CUSTOM_MARKER",
    "CUSTOM_SIGNATURE",
    "EICAR",
    "ENVELOPE_SYMBOL",
    "NO_TEST_RULES",
    "QUARANTINE_MARKER",
    "REJECT_MARKER",
    "Clamd",
    "Rspamd",
]

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
CUSTOM_MARKER = b"RELAY-TEST-MALWARE-7f3a9c-DO-NOT-DELIVER"
CUSTOM_SIGNATURE = "Relay.Test.Custom"
REJECT_MARKER = "XTEST-REJECT-MARKER"
"""In a body: rspamd scores it 100 (over any reject threshold)."""
QUARANTINE_MARKER = "XTEST-QUARANTINE-MARKER"
"""In the Subject: rspamd scores it 8 (the tests quarantine from 5, reject from 15)."""
ENVELOPE_SYMBOL = "TEST_ENVELOPE"
"""Scores 0; its options are what rspamd understood of the request's envelope headers:
`user=`, `ip=`, `helo=`, `from=`, `rcpt=` (each), `queue_id=`."""
NO_TEST_RULES = "relay-no-test-rules"
"""A settings id (`Settings-ID`) under which the test rules above do not run."""

DNS_MODULES = ("rbl", "asn", "fuzzy_check", "spf", "dkim", "dmarc", "hfilter")
"""Off because they ask DNS (no resolver here; a provider keeps the URL lists of `rbl` and
`fuzzy_check`, which check outbound content)."""
OUTBOUND_OFF = (
    "antivirus",  # the relay asks clamd itself: rspamd would scan every message a second time
    "dkim_signing",  # the relay signs; rspamd's signature would be computed and thrown away
    "arc",
    "milter_headers",  # nothing rspamd proposes is added to the mail
    "ratelimit",  # the relay's quotas
    "greylist",  # inbound only (and never for authenticated mail)
    "once_received",
    "whitelist",  # SPF/DKIM/DMARC-based: inbound
    "mx_check",
    "replies",
    "reputation",
    "neural",  # needs Redis, as Bayes does (no Redis here: statistics are off too)
    "history_redis",
    "url_redirector",
)
"""Modules an outbound scanner has no use for (README "Content scanning")."""

ECHO_RULE = f"""
rspamd_config:register_symbol({{
  name = '{ENVELOPE_SYMBOL}', score = 0.0, group = 'test',
  callback = function(task)
    local seen = {{}}
    local user = task:get_user()
    if user then table.insert(seen, 'user=' .. user) end
    local ip = task:get_from_ip()
    if ip and ip:is_valid() then table.insert(seen, 'ip=' .. ip:to_string()) end
    local helo = task:get_helo()
    if helo then table.insert(seen, 'helo=' .. helo) end
    local from = task:get_from('smtp')
    if from and from[1] then table.insert(seen, 'from=' .. from[1].addr) end
    for _, rcpt in ipairs(task:get_recipients('smtp') or {{}}) do
      table.insert(seen, 'rcpt=' .. rcpt.addr)
    end
    local queue_id = task:get_queue_id()
    if queue_id then table.insert(seen, 'queue_id=' .. queue_id) end
    return true, 0.0, seen
  end,
}})
"""


def _binary(name: str, *where: str) -> str:
    found = shutil.which(name) or next((p for p in where if os.path.exists(p)), None)
    if found is None:
        raise RuntimeError(
            f"{name} is not installed: run `make test` (scripts/install-scanners.sh installs it)"
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_tcp(port: int, process: subprocess.Popen[bytes], within: float, log: Path) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}: {_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"not listening on {port} after {within}s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


class Clamd:
    """`/usr/sbin/clamd` in the foreground, on a unix socket and a loopback TCP port.

    Its TemporaryDirectory is in memory (/dev/shm) as a provider's should be (README): clamd
    writes each MIME part of every message there, and on a disk that made most of its CPU
    per scan (measured 0.2-1.2 ms against 0.1 ms per 5 KB message).
    """

    def __init__(self, folder: Path, *, stream_max: str = "60M") -> None:
        self.folder = folder
        self.stream_max = stream_max
        """clamd's StreamMaxLength: what INSTREAM takes (a descriptor is not capped by it)."""
        self.socket = folder / "clamd.sock"
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log = folder / "clamd.out"
        self._temp: Path | None = None

    def _temporary_directory(self) -> Path:
        if self._temp is None:
            if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
                self._temp = Path(tempfile.mkdtemp(prefix="relay-clamd-", dir="/dev/shm"))
            else:
                self._temp = self.folder / "tmp"
                self._temp.mkdir(exist_ok=True)
        return self._temp

    @property
    def unix_address(self) -> str:
        return f"unix:{self.socket}"

    @property
    def tcp_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        db = self.folder / "db"
        db.mkdir(parents=True, exist_ok=True)
        (db / "test.hdb").write_text(
            f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Test.EICAR.HDB\n"
        )
        (db / "test.ndb").write_text(
            f"Test.EICAR.NDB:0:*:{EICAR.hex()}\n{CUSTOM_SIGNATURE}:0:*:{CUSTOM_MARKER.hex()}\n"
        )
        conf = self.folder / "clamd.conf"
        conf.write_text(
            "Foreground yes\n"
            f"LocalSocket {self.socket}\n"
            f"TCPSocket {self.port}\n"
            "TCPAddr 127.0.0.1\n"
            f"DatabaseDirectory {db}\n"
            f"TemporaryDirectory {self._temporary_directory()}\n"
            f"StreamMaxLength {self.stream_max}\n"
            "MaxScanSize 200M\n"
            "MaxFileSize 60M\n"
            "AlertExceedsMax yes\n"
            "LogTime no\n"
        )
        return conf

    def start(self) -> None:
        conf = self.write_config()
        with open(self._log, "ab") as out:
            self.process = subprocess.Popen(
                [_binary("clamd", "/usr/sbin/clamd"), "-c", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _wait_tcp(self.port, self.process, 60.0, self._log)

    def stop(self) -> None:
        _stop(self.process)
        self.process = None
        if self._temp is not None and self._temp.parent == Path("/dev/shm"):
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Rspamd:
    """A private rspamd: the stock modules from /etc/rspamd, our local.d, loopback ports.

    Its DBDIR is kept in `folder`, so only the first start of a session compiles the
    hyperscan databases (13-15 s); later starts take about a second.
    """

    def __init__(self, folder: Path, workers: int = 1, *, test_rules: bool = True) -> None:
        self.folder = folder
        self.workers = workers
        """Normal workers (rspamd's own default: one per core; the tests need one)."""
        self.test_rules = test_rules
        """The tests' markers and envelope echo (off: rspamd as a provider runs it, for the
        bench)."""
        self.port = _free_port()
        self.controller_port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log = folder / "rspamd.out"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def socket(self) -> Path:
        """The normal worker's unix socket (it listens on both)."""
        return self.folder / "run" / "normal.sock"

    @property
    def unix_url(self) -> str:
        return f"unix:{self.socket}"

    def write_config(self) -> Path:
        etc = self.folder / "etc"
        local = etc / "local.d"
        (local / "maps.d").mkdir(parents=True, exist_ok=True)
        for sub in ("run", "db", "log"):
            (self.folder / sub).mkdir(exist_ok=True)
        dead_dns = _free_port()  # nothing answers there: lookups fail at once
        files = {
            "options.inc": (
                f'dns {{ nameserver = ["127.0.0.1:{dead_dns}"]; timeout = 0.2s;'
                " retransmits = 1; }\n"
            ),
            "actions.conf": "greylist = null;\n",
        }
        tests = {
            "regexp.conf": (
                f"TEST_REJECT_MARKER {{ re = '/{REJECT_MARKER}/{{sa_body}}'; score = 100.0;"
                ' description = "test"; group = "test"; }\n'
            ),
            "multimap.conf": (
                'TEST_QUARANTINE_MARKER { type = "header"; header = "Subject"; regexp = true;'
                ' map = "${LOCAL_CONFDIR}/local.d/maps.d/quarantine.map"; score = 8.0;'
                ' description = "test"; }\n'
            ),
            "maps.d/quarantine.map": f"/{QUARANTINE_MARKER}/\n",
            "settings.conf": (
                f'{NO_TEST_RULES} {{ id = "{NO_TEST_RULES}";'
                ' apply { groups_disabled = ["test"]; } }\n'
            ),
        }
        for module in DNS_MODULES + OUTBOUND_OFF:
            files[f"{module}.conf"] = "enabled = false;\n"
        if self.test_rules:
            files.update(tests)
        for name in tests.keys() - files.keys():  # a folder used before with them
            (local / name).unlink(missing_ok=True)
        for name, text in files.items():
            (local / name).write_text(text)
        (etc / "rspamd.local.lua").write_text(ECHO_RULE if self.test_rules else "")
        conf = self.folder / "rspamd.conf"
        # $CONFDIR/common.conf less statistic.conf: Bayes needs Redis, which this rspamd has
        # not, and would tokenize every message for nothing.
        conf.write_text(
            'lua = "$RULESDIR/rspamd.lua"\n'
            '.include "$CONFDIR/metrics.conf"\n'
            '.include "$CONFDIR/actions.conf"\n'
            '.include "$CONFDIR/groups.conf"\n'
            '.include "$CONFDIR/composites.conf"\n'
            '.include "$CONFDIR/modules.conf"\n'
            '.include "$CONFDIR/settings.conf"\n'
            '.include(try=true) "$LOCAL_CONFDIR/rspamd.conf.local"\n'
            '.include(try=true,priority=10) "$LOCAL_CONFDIR/rspamd.conf.local.override"\n'
            '.include(try=true,priority=10) "$LOCAL_CONFDIR/rspamd.conf.override"\n'
            'modules { path = "${PLUGINSDIR}"; fallback_path = "${SHAREDIR}/lua";'
            ' try_path = "${LOCAL_CONFDIR}/plugins.d/"; }\n'
            "options {\n"
            '    pidfile = "$RUNDIR/rspamd.pid";\n'
            '    .include "$CONFDIR/options.inc"\n'
            "    .include(try=true; priority=1,duplicate=merge)"
            ' "$LOCAL_CONFDIR/local.d/options.inc"\n'
            "}\n"
            'logging { type = "file"; filename = "$LOGDIR/rspamd.log"; level = "warning"; }\n'
            'worker "normal" {\n'
            f'    bind_socket = "127.0.0.1:{self.port}";\n'
            f'    bind_socket = "{self.socket} mode=0666";\n'
            '    .include "$CONFDIR/worker-normal.inc"\n'
            f"    count = {self.workers};\n"
            "}\n"
            'worker "controller" {\n'
            f'    bind_socket = "127.0.0.1:{self.controller_port}";\n'
            '    .include "$CONFDIR/worker-controller.inc"\n'
            "    count = 1;\n"
            "}\n"
        )
        return conf

    def start(self) -> None:
        conf = self.write_config()
        command = [_binary("rspamd", "/usr/bin/rspamd"), "-f", "-c", str(conf)]
        if os.geteuid() == 0:
            command[2:2] = ["-i", "-u", "root", "-g", "root"]
        for name in ("LOCAL_CONFDIR", "RUNDIR", "DBDIR", "LOGDIR"):
            sub = {"LOCAL_CONFDIR": "etc", "RUNDIR": "run", "DBDIR": "db", "LOGDIR": "log"}[name]
            command.append(f"--var={name}={self.folder / sub}")
        with open(self._log, "ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _wait_tcp(self.port, self.process, 90.0, self.folder / "log" / "rspamd.log")

    def stop(self) -> None:
        _stop(self.process)
        self.process = None
