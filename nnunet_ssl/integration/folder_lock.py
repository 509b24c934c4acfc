"""One writer per pretraining folder: a lock file created with O_EXCL that holds the writer's PID.

A second run on the same folder is refused while the first is alive. A lock whose process is gone
(killed with -9, a crashed machine) is stale: the next run says so and takes it over. A lock from
another host cannot be checked and is never taken over silently.
"""
import os
import socket

from nnunet_ssl.errors import SSLUserError

LOCK_NAME = ".nnunet_ssl.lock"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_owner(text: str) -> tuple[int, str]:
    """(pid, host) from a lock file's text ``"<pid> <host>"``; (0, "") when unreadable."""
    parts = text.split()
    try:
        return int(parts[0]), (parts[1] if len(parts) > 1 else "")
    except (IndexError, ValueError):
        return 0, ""


class FolderLock:
    """``with FolderLock(folder, what):`` holds the folder's lock; released (and an empty folder that
    the lock created removed again) on every exit."""

    def __init__(self, folder: str, command: str, announce=print):
        self.folder, self.command, self.announce = folder, command, announce
        self.path = os.path.join(folder, LOCK_NAME)
        self.created_folders: list[str] = []  # made by this lock, deepest first
        self.held = False

    def __enter__(self) -> "FolderLock":
        missing, folder = [], os.path.abspath(self.folder)
        while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
            missing.append(folder)
            folder = os.path.dirname(folder)
        self.created_folders = missing
        try:
            os.makedirs(self.folder, exist_ok=True)
            self._create()
        except SSLUserError:
            raise
        except OSError as e:  # read-only, not a folder, disk full, ...
            raise SSLUserError(f"cannot write into {self.folder} ({e.strerror or type(e).__name__}).",
                               "make nnUNet_results writable for you (chmod/chown), or point nnUNet_results "
                               "at a folder you can write") from None
        self.held = True
        return self

    def _create(self) -> None:
        for _ in range(2):  # a second try after removing a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()}\n")
            return
        raise SSLUserError(f"another run took the lock {self.path} at the same moment.", "wait for it to finish")

    def _handle_existing(self) -> None:
        try:
            with open(self.path) as f:
                pid, host = lock_owner(f.read())
        except FileNotFoundError:
            return  # released in between: try again
        here = socket.gethostname()
        if host and host != here:
            raise SSLUserError(f"{self.folder} is locked by process {pid} on host {host} ({self.path}).",
                               f"wait for that run to finish; if it is no longer running, delete {self.path}")
        if pid_alive(pid):
            raise SSLUserError(f"another {self.command} (process {pid}) is writing into {self.folder}; "
                               "two runs would overwrite each other.",
                               f"wait for it to finish (or stop it: kill {pid}), then run again")
        self.announce(f"taking over a stale lock of process {pid or '?'}, which is no longer running ({self.path})")
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def __exit__(self, *exc) -> None:
        if not self.held:
            return
        self.held = False
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        for folder in self.created_folders:  # only empty ones: a run that failed before writing leaves nothing
            try:
                os.rmdir(folder)
            except OSError:
                break
