"""Start and stop a throwaway PostgreSQL cluster (no pytest here: the test fixture in
``tests/pg.py`` and ``bench/team_ledger.py`` both use it).

``initdb`` refuses to run as root, so as root it runs as the ``postgres`` user in a
``mkdtemp`` folder chowned to it (a 0700 folder of root's would not do); ``pg_ctl``
starts it on a free loopback port with its socket in that folder.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.backends.machine import free_port as _free_port


class ClusterUnavailable(RuntimeError):
    """PostgreSQL is not installed here (or cannot be run as this user)."""


@dataclass(frozen=True)
class Cluster:
    host: str
    port: int
    user: str
    root: Path
    pg_ctl: str
    #: the server's options (``pg_ctl -o``), for :meth:`restart`
    options: str = ""

    @property
    def admin_url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)

    def halt(self) -> None:
        """Stop the server as a crash does (``-m immediate``), its files kept."""
        subprocess.run(
            [self.pg_ctl, "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            cwd=self.root,
            timeout=60,
            **_as_postgres(),
        )

    def restart(self) -> None:
        """Start a halted server again, on its port (RuntimeError with its log if not)."""
        log_path, data = self.root / "log", str(self.root / "data")
        start = ["-o", self.options, "-l", str(log_path), "-w", "-t", "60", "start"]
        done = subprocess.run(
            [self.pg_ctl, "-D", data, *start],
            capture_output=True,
            text=True,
            cwd=self.root,
            env=_ENV,
            timeout=90,
            **_as_postgres(),
        )
        if done.returncode != 0:
            log = log_path.read_text(errors="replace")[-800:] if log_path.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()} {log}")


#: what the server's programs run with
_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


def pg_bin(name: str) -> str | None:
    """A PostgreSQL program: on PATH, or where Debian keeps it."""
    found = shutil.which(name)
    if found:
        return found
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return hits[-1] if hits else None


def _as_postgres() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterUnavailable("running as root and there is no `postgres` user") from None
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def start_cluster(*, fsync: bool = False) -> Cluster:
    """A running cluster; :class:`ClusterUnavailable` without PostgreSQL, RuntimeError
    when it does not start (with its log)."""
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise ClusterUnavailable("PostgreSQL is not installed (initdb/pg_ctl; Debian `postgresql`)")
    run_as = _as_postgres()
    root = Path(tempfile.mkdtemp(prefix="switchyard-pg-"))
    if run_as:
        os.chown(root, run_as["user"], run_as["group"])
    data, port = root / "data", _free_port()
    common: dict[str, Any] = {"env": _ENV, "cwd": root, "capture_output": True, "text": True}
    init = subprocess.run(
        [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        **common,
        **run_as,
        timeout=120,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr.strip()[-500:]}")
    # The port is free when picked and bound seconds later: another process (the other
    # pytest-xdist worker's servers) may take it meanwhile, so a start that found it taken
    # tries a new one. A failed start is stopped first (one that timed out may still run).
    log_path = root / "log"
    for _ in range(3):
        seen = log_path.stat().st_size if log_path.exists() else 0
        opts = f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not fsync:
            opts += " -c fsync=off -c full_page_writes=off"
        start = subprocess.run(
            [pg_ctl, "-D", str(data), "-o", opts, "-l", str(log_path), "-w", "-t", "60", "start"],
            **common,
            **run_as,
            timeout=90,
        )
        if start.returncode == 0:
            break
        stop = [pg_ctl, "-D", str(data), "-m", "immediate", "stop"]
        subprocess.run(stop, **common, **run_as, timeout=60)
        log = log_path.read_bytes()[seen:].decode(errors="replace") if log_path.exists() else ""
        if "Address already in use" not in log:
            break
        port = _free_port()
    if start.returncode != 0:
        log = log_path.read_text(errors="replace")[-800:] if log_path.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"pg_ctl start failed: {start.stderr.strip()} {log}")
    return Cluster("127.0.0.1", port, "postgres", root, pg_ctl, opts)
