"""Atomic file writes: a temporary file in the target folder, then os.replace.

A reader never sees a half-written file, and a killed job leaves at worst a stray *.tmp. The
data are flushed to disk before the rename and the rename before returning, so a marker written
after a file (the cache's shard markers) never outlives that file's contents, even on power loss.
`file_sha256` checksums a finished file (e.g. to verify it later).
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import UserError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically, creating parent folders. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise named_os_error(exc, path) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def named_os_error(exc: OSError, path: str | os.PathLike) -> OSError:
    """`exc` itself when it names a file, else the same error naming `path` (a failed write,
    such as a full disk, names none)."""
    if exc.filename is not None or exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def ensure_writable_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create the folder `path` (with its parents) and write and remove a probe file in it, so a
    tool finds an unusable output folder before its long work, not after. A failure is a
    UserError naming the folder and the system's reason."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = _create_temp(path / ".write-probe")
        try:
            os.write(fd, b"0")
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(f"{what} {path} is not writable: {exc.strerror or exc}") from exc
    return path


def open_file_mode() -> int:
    """The mode open() gives a new file: 0o666 less the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def give_open_modes(folder: str | os.PathLike) -> None:
    """Files under `folder` get the modes open() would give them: for what third-party writers
    (safetensors writes 0o600) put in a folder that others on a shared cluster must read."""
    mode = open_file_mode()
    for file in Path(folder).rglob("*"):
        if file.is_file() and not file.is_symlink():
            os.chmod(file, mode)


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new, unique temporary file beside `path`, created like open() creates files (mode 0o666
    less the process umask; tempfile.mkstemp would make it 0o600, unreadable to the group)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, **kwargs: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, **kwargs))


def atomic_save_image(path: str | os.PathLike, image: np.ndarray, **save_kwargs: Any) -> Path:
    """Save a uint8 (H, W) or (H, W, 3) array; the format follows the file suffix."""
    buf = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}[Path(path).suffix.lower()]
    Image.fromarray(image).save(buf, format=fmt, **save_kwargs)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_save_figure(path: str | os.PathLike, fig, dpi: int = 100) -> Path:
    """A matplotlib figure as PNG, written atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
