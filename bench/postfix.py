"""A throwaway Postfix for the side-by-side benchmark: its own config and queue directories
under var/bench/, listening on a loopback port, relaying everything to the sink.

It gets what the relay is measured with: the same TLS mode on submission (STARTTLS by
default, `smtpd_tls_security_level = encrypt`; or implicit TLS) and the same certificate,
a policy daemon doing the relay's own quota reservation per recipient (bench.policyd, over
`check_policy_service`), and durable queue files (Postfix fsyncs before its 250, as the
relay's Redis does with `appendfsync always`). With `sasl`, SASL AUTH through Dovecot
(bench.dovecot) as a submission port has it: `smtpd_tls_auth_only = yes`, and only
authenticated clients may relay. Without it, the second reference: no AUTH, loopback
clients may relay (`permit_mynetworks`).

`bench/install-postfix.sh` installs it (Debian package, no configuration); without it the
bench says so and prints the relay's numbers only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.net import children

__all__ = ["Postfix", "postfix_binary", "pss"]

MASTER_CF = """\
{address} inet n - n - - smtpd{options}
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postfix_binary() -> str | None:
    found = shutil.which("postfix") or (
        "/usr/sbin/postfix" if Path("/usr/sbin/postfix").exists() else None
    )
    if found is None or os.geteuid() != 0:  # master starts as root and drops to `postfix`
        return None
    return found


def pss(pid: int) -> int:
    """Proportional set size in bytes: each shared page divided among the processes that map
    it. Summed over Postfix's ~100 processes it counts their binaries and libraries once,
    where a sum of RSS counts them once per process (ten times too much here)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


class Postfix:
    def __init__(
        self,
        base: Path,
        *,
        port: int,
        sink_port: int,
        cert: Path,
        key: Path,
        policy_port: int | None,
        hold: bool,
        processes: int,
        tls: str = "starttls",
        sasl: bool = False,
    ) -> None:
        """`tls`: "starttls" or "implicit"; `sasl`: AUTH through Dovecot, which must then
        serve `sasl_socket` (Postfix's `private/auth`; bench.dovecot does)."""
        self.base = base.resolve()
        self.port = port
        self.config = self.base / "etc"
        self.queue = self.base / "spool"
        self.data = self.base / "data"
        self.binary = postfix_binary() or "postfix"
        self.tls = tls
        self.sasl_socket = self.queue / "private" / "auth"
        # Who may relay: a logged-in client, or (no AUTH) anyone on loopback.
        allowed = "permit_sasl_authenticated" if sasl else "permit_mynetworks"
        restrictions = [allowed, "reject"]
        end_of_data = []
        if policy_port is not None:
            policy = f"check_policy_service inet:127.0.0.1:{policy_port}"
            restrictions.insert(0, policy)
            end_of_data.append(policy)
        if hold:  # accept only: every message parks in the hold queue, none is delivered
            restrictions.insert(0, "check_client_access static:HOLD")
        self.main_cf = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.bench",
            "mydomain": "bench",
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relayhost": f"[127.0.0.1]:{sink_port}",
            "smtpd_relay_restrictions": f"{allowed}, reject",
            "smtpd_recipient_restrictions": ", ".join(restrictions),
            "smtpd_end_of_data_restrictions": ", ".join(end_of_data),
            "smtpd_tls_cert_file": str(cert.resolve()),
            "smtpd_tls_key_file": str(key.resolve()),
            "smtpd_tls_security_level": "encrypt",
            "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
            "smtpd_tls_protocols": ">=TLSv1.2",
            "smtp_tls_security_level": "may",
            "default_process_limit": str(processes),
            "message_size_limit": "50000000",
            "maillog_file": str(self.base / "maillog"),
            "maillog_file_prefixes": str(self.base),
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtputf8_enable": "yes",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "shlib_directory": "/usr/lib/postfix",
        }
        if sasl:
            self.main_cf |= {
                "smtpd_tls_auth_only": "yes",
                "smtpd_sasl_auth_enable": "yes",
                "smtpd_sasl_type": "dovecot",
                "smtpd_sasl_path": "private/auth",
                "smtpd_sasl_security_options": "noanonymous",
            }

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def start(self) -> None:
        self.stop()
        if self.base.exists():
            shutil.rmtree(self.base)
        for folder in (self.config, self.queue, self.data):
            folder.mkdir(parents=True, exist_ok=True)
        (self.config / "main.cf").write_text(
            "".join(f"{key} = {value}\n" for key, value in self.main_cf.items())
        )
        options = " -o smtpd_tls_wrappermode=yes" if self.tls == "implicit" else ""
        (self.config / "master.cf").write_text(
            MASTER_CF.format(address=f"127.0.0.1:{self.port}", options=options)
        )
        shutil.chown(self.data, "postfix", "postfix")
        self._postfix("set-permissions", check=False)
        self._postfix("check")
        started = self._postfix("start", check=False)
        if started.returncode != 0:
            raise RuntimeError(f"postfix start failed: {started.stderr.strip()}")
        self.wait_listening()

    def wait_listening(self, within: float = 30.0) -> None:
        import socket

        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"postfix does not listen on {self.port}; see {self.base / 'maillog'}")

    def stop(self) -> None:
        if (self.config / "main.cf").exists():
            self._postfix("stop", check=False)
            deadline = time.monotonic() + 20
            while self.master_pid() is not None and time.monotonic() < deadline:
                time.sleep(0.1)

    def master_pid(self) -> int | None:
        lock = self.data / "master.lock"
        try:
            pid = int(lock.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def pids(self) -> list[int]:
        """The master and its children."""
        master = self.master_pid()
        if master is None:
            return []
        return [master, *children(master)]

    def memory(self) -> int:
        """Memory of the master and all its children in bytes, shared pages counted once."""
        return sum(pss(pid) for pid in self.pids())

    def log_count(self, text: str) -> int:
        """Lines of its log that contain `text`."""
        try:
            with (self.base / "maillog").open(errors="replace") as log:
                return sum(text in line for line in log)
        except OSError:
            return 0

    def queued(self) -> int:
        """Messages in any of its queues (hold included)."""
        count = 0
        for name in ("incoming", "active", "deferred", "hold", "maildrop"):
            folder = self.queue / name
            if folder.exists():
                count += sum(len(files) for _, _, files in os.walk(folder))
        return count
