"""The one atomic writer: rename into place, usual permissions, nothing left behind on failure."""
import os
import stat

import pandas as pd
import pytest

from mrcbench.errors import MrcbenchError
from mrcbench.runtime import files


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_written_files_get_the_usual_mode_and_no_temporary_is_left(tmp_path):
    written = [
        files.write_json(tmp_path / "a" / "x.json", {"k": "é"}),
        files.write_text(tmp_path / "b.html", "<p>"),
        files.write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "c.parquet"),
        files.write_csv(pd.DataFrame({"a": [1]}), tmp_path / "d.csv"),
    ]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask(), path
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["b.html", "c.parquet", "d.csv", "x.json"]
    assert files.read_json(tmp_path / "a" / "x.json") == {"k": "é"}


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = files.write_text(tmp_path / "out.txt", "old")
    with pytest.raises(RuntimeError), files.atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_truncated_files_are_one_line_naming_the_file(tmp_path):
    parquet = files.write_parquet(pd.DataFrame({"a": range(100)}), tmp_path / "t.parquet")
    parquet.write_bytes(parquet.read_bytes()[:40])
    with pytest.raises(MrcbenchError, match=r"t\.parquet: unreadable or truncated .*; delete it and re-run$"):
        files.read_parquet(parquet)
    (tmp_path / "t.json").write_text('{"a": ')
    with pytest.raises(MrcbenchError, match=r"t\.json: unreadable or truncated .*; delete it and re-run$"):
        files.read_json(tmp_path / "t.json")


def _tree(root):
    return {str(path.relative_to(root)): path.read_text() for path in sorted(root.rglob("*")) if path.is_file()}


def _directory(path, files_in):
    path.mkdir(parents=True)
    for name, text in files_in.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def test_replace_directory_swaps_the_whole_tree_and_leaves_nothing_beside(tmp_path):
    out = _directory(tmp_path / "ckpt", {"model.bin": "old", "stale.txt": "earlier run", "sub/a": "old a"})
    staging = files.staging_dir(out)
    assert staging == tmp_path / "ckpt.tmp" and not staging.exists()
    _directory(staging, {"model.bin": "new", "sub/a": "new a"})
    assert files.replace_directory(staging, out) == out
    assert _tree(out) == {"model.bin": "new", "sub/a": "new a"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ckpt"]
    # A first write (nothing to replace) is one rename.
    fresh = _directory(tmp_path / "fresh.tmp", {"x": "1"})
    files.replace_directory(fresh, tmp_path / "fresh")
    assert _tree(tmp_path / "fresh") == {"x": "1"} and not fresh.exists()


def test_staging_dir_removes_a_leftover_of_an_interrupted_run(tmp_path):
    _directory(tmp_path / "ckpt.tmp", {"half.bin": "partial"})
    staging = files.staging_dir(tmp_path / "ckpt")
    assert not staging.exists() and staging.parent.is_dir()


def test_no_moment_without_the_old_directory_and_a_failed_swap_restores_it(tmp_path, monkeypatch):
    """Between the two renames the earlier directory is complete (aside); if the second rename fails
    (or the process is interrupted there), the earlier one is back at its path, readable."""
    out = _directory(tmp_path / "ckpt", {"model.bin": "old", "sub/a": "old a"})
    staging = _directory(tmp_path / "ckpt.tmp", {"model.bin": "new"})
    real_replace, seen_between = os.replace, []

    def replace(src, dst):
        if os.fspath(src) == os.fspath(staging):  # the second step: the old one has been moved aside
            aside = tmp_path / ".ckpt.old"
            seen_between.append(_tree(aside))
            raise KeyboardInterrupt  # interrupted between the steps
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        files.replace_directory(staging, out)
    assert seen_between == [{"model.bin": "old", "sub/a": "old a"}]
    assert _tree(out) == {"model.bin": "old", "sub/a": "old a"}
    assert _tree(staging) == {"model.bin": "new"}  # the caller's staging folder, for staging_dir to clear


def test_replace_directory_keeps_the_new_tree_when_deleting_the_old_one_fails(tmp_path, monkeypatch):
    out = _directory(tmp_path / "ckpt", {"model.bin": "old"})
    staging = _directory(tmp_path / "ckpt.tmp", {"model.bin": "new"})
    real_rmtree = files.shutil.rmtree

    def rmtree(path, ignore_errors=False, **kwargs):
        if ignore_errors:
            return None  # deleting the old copy failed silently (e.g. a busy NFS file)
        return real_rmtree(path, **kwargs)

    monkeypatch.setattr(files.shutil, "rmtree", rmtree)
    files.replace_directory(staging, out)
    assert _tree(out) == {"model.bin": "new"}
    # The next replacement clears the stale aside copy first.
    monkeypatch.setattr(files.shutil, "rmtree", real_rmtree)
    staging = _directory(tmp_path / "ckpt.tmp", {"model.bin": "newer"})
    files.replace_directory(staging, out)
    assert _tree(out) == {"model.bin": "newer"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ckpt"]


def test_replace_directory_without_staging_is_one_line(tmp_path):
    with pytest.raises(MrcbenchError, match="ckpt.tmp: the directory to put at .*ckpt does not exist"):
        files.replace_directory(tmp_path / "ckpt.tmp", tmp_path / "ckpt")


def test_sha256_file_matches_hashlib(tmp_path):
    import hashlib

    data = os.urandom(3 << 20)  # more than one read block
    (tmp_path / "blob").write_bytes(data)
    assert files.sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
