"""The one atomic writer: rename into place, usual permissions, nothing left behind on failure."""
import os
import stat

import pandas as pd
import pytest

from mrcbench import files
from mrcbench.errors import MrcbenchError


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
