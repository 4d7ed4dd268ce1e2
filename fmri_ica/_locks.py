"""Lock files that say who holds them, survive crashes (stale takeover) and work across hosts."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from .exceptions import OutputBusyError

logger = logging.getLogger(__name__)

__all__ = ["FileLock"]


class FileLock:
    """Exclusive lock file (O_CREAT | O_EXCL) holding pid, host and start time.

    While held, a daemon thread touches the file every ``stale_s / 4`` seconds. Another
    live holder -> :class:`OutputBusyError` (the caller skips the run). A lock is stale,
    and taken over, when its file has not been touched for ``stale_s`` seconds (the
    holder died, on any host) or its pid is gone on this host.
    """

    def __init__(self, path: Path, stale_s: float):
        self.path, self.stale_s = Path(path), float(stale_s)
        self.token = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and not self._stale(holder):
                    since = datetime.fromtimestamp(float(holder.get("time", 0)), UTC)
                    raise OutputBusyError(
                        f"locked by pid {holder.get('pid')} on {holder.get('host')} since "
                        f"{since:%Y-%m-%d %H:%M:%S} UTC ({self.path.name})"
                    ) from None
                self._take_over(holder)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(self.token, handle)
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._beat.start()
            return self
        raise OutputBusyError(f"could not take the lock {self.path}")

    def __exit__(self, *exc):
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self._holder() == self.token:
            self.path.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.stale_s / 4):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # vanished, or being written this instant

    def _age(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except OSError:
            return 0.0

    def _stale(self, holder: dict) -> bool:
        if self._age() > self.stale_s:
            return True
        if holder.get("host") != socket.gethostname():
            return False
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError, TypeError):
            return False
        return False

    def _take_over(self, holder: dict | None) -> None:
        if holder is None and self._age() < min(5.0, self.stale_s):
            raise OutputBusyError(f"lock {self.path} is being created by another process")
        logger.warning("Taking over stale lock %s (%s)", self.path, holder)
        # Rename rather than unlink, then check it is the lock we judged stale: a
        # process that took it over just before us must keep its fresh lock.
        aside = self.path.with_name(f"{self.path.name}.stale.{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        try:
            if holder is not None and json.loads(aside.read_text()) != holder:
                os.link(aside, self.path)  # put the live lock back
                raise OutputBusyError(f"lock {self.path} was just taken by another process")
        except (OSError, ValueError):
            pass
        finally:
            aside.unlink(missing_ok=True)
