"""Result files: the one atomic writer (temp file, then rename) and checked readers.

Every file the pipeline writes goes through :func:`atomic_path` (or a helper built on it): the
content is written to a temporary file in the same folder and renamed into place, so an
interrupted job never leaves a file that looks finished. A result *directory* (a checkpoint) is
built in :func:`staging_dir` and put in place by :func:`replace_directory`. Written files get the usual permissions
(``0666`` less the umask, ``0644`` by default), not the ``0600`` of a bare temporary file.

The readers turn a truncated or corrupt intermediate into one line naming the file and what to do.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mrcbench.errors import MrcbenchError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else remove it.

    ``suffix`` keeps an extension writers insist on (``np.savez`` appends ``.npz`` otherwise).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, payload: Any, indent: int | None = 1) -> Path:
    """JSON (UTF-8, not ASCII-escaped) with a final newline."""
    return write_text(path, json.dumps(payload, ensure_ascii=False, indent=indent) + "\n")


def write_parquet(frame, path: str | os.PathLike) -> Path:
    with atomic_path(path, suffix=".parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(path)


def write_csv(frame, path: str | os.PathLike) -> Path:
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def staging_dir(out_dir: str | os.PathLike) -> Path:
    """The folder beside ``out_dir`` to build it in (``<name>.tmp``, not created): a leftover of an
    interrupted run is removed, so a restart begins from nothing. Pass it to :func:`replace_directory`."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(out_dir.name + ".tmp")
    if staging.is_dir() and not staging.is_symlink():
        shutil.rmtree(staging)
    elif staging.exists() or staging.is_symlink():
        staging.unlink()
    return staging


def replace_directory(staging: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Put the finished directory ``staging`` at ``out_dir``, replacing an earlier one whole.

    The earlier directory is renamed aside (``.<name>.old``), ``staging`` renamed in, and only then is
    the earlier one deleted: at no point is the earlier directory gone while the new one is not in
    place (no rmtree-then-rename gap). If renaming ``staging`` in fails, the earlier directory is
    renamed back; a process killed between the two renames leaves it complete at ``.<name>.old``.
    """
    staging, out_dir = Path(staging), Path(out_dir)
    if not staging.is_dir():
        raise MrcbenchError(f"{staging}: the directory to put at {out_dir} does not exist")
    if not (out_dir.exists() or out_dir.is_symlink()):
        os.replace(staging, out_dir)
        return out_dir
    aside = out_dir.with_name(f".{out_dir.name}.old")
    if aside.exists():
        shutil.rmtree(aside)  # a leftover of an earlier replacement that was killed after its swap
    os.replace(out_dir, aside)
    try:
        os.replace(staging, out_dir)
    except BaseException:
        os.replace(aside, out_dir)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return out_dir


def save_pretrained(obj: Any, folder: str | os.PathLike, **kwargs: Any) -> None:
    """``obj.save_pretrained(folder)`` (a model in safetensors, or a tokenizer); an I/O failure of the
    safetensors writer (a full disk: ``SafetensorError`` with the OS error inside) becomes the
    ``OSError`` it wraps, naming ``folder``: the CLI prints it as one line."""
    from safetensors import (
        SafetensorError,  # only where a checkpoint is saved: the workflow imports this module
    )

    try:
        obj.save_pretrained(folder, **kwargs)
    except SafetensorError as exc:
        code = re.search(r"(?:os error|code:) ?(\d+)", str(exc))
        number = int(code.group(1)) if code else errno.EIO
        raise OSError(number, os.strerror(number), os.fspath(folder)) from None


WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


def checkpoint_problem(folder: str | os.PathLike, tokenizer: bool = True) -> str | None:
    """What a checkpoint folder written by ``save_pretrained`` lacks (None: nothing): ``config.json``,
    the safetensors weights (one file, or an index and every shard it names) and, with ``tokenizer``,
    the fast tokenizer's ``tokenizer.json``. Reads no weights: cheap enough for every dry run."""
    folder = Path(folder)
    missing = [name for name in ("config.json", *(("tokenizer.json",) if tokenizer else ())) if not (folder / name).is_file()]
    if (folder / WEIGHTS_INDEX).is_file():
        try:
            shards = sorted(set(json.loads((folder / WEIGHTS_INDEX).read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            return f"{WEIGHTS_INDEX} unreadable"
        missing += [shard for shard in shards if not (folder / shard).is_file()]
    elif not (folder / WEIGHTS).is_file():
        missing.append(WEIGHTS)
    return f"{', '.join(missing)} missing" if missing else None


def incomplete(folder: str | os.PathLike, problem: str, step_folder: str | os.PathLike | None = None) -> MrcbenchError:
    """The one-line error for an incomplete checkpoint: name it, what it lacks, and what to delete."""
    return MrcbenchError(
        f"{folder}: incomplete checkpoint ({problem}); delete {step_folder or folder} and re-run"
    )


def corrupt(path: str | os.PathLike, exc: BaseException | str) -> MrcbenchError:
    """The one-line error for an unreadable intermediate file."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return MrcbenchError(f"{path}: unreadable or truncated ({detail}); delete it and re-run")


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None):
    import pandas as pd  # here, as every heavy library of this module: the workflow imports it for its writers
    import pyarrow

    path = Path(path)
    if not path.is_file():
        raise MrcbenchError(f"{path}: file not found")
    try:
        return pd.read_parquet(path, columns=columns)
    except (pyarrow.ArrowException, OSError, ValueError) as exc:
        raise corrupt(path, exc) from None


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise MrcbenchError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise corrupt(path, exc) from None
    except RecursionError:
        raise MrcbenchError(f"{path}: JSON nested too deeply to read") from None
