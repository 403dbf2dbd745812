import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mediaserver.cli import main
from mediaserver.registry import Registry, RegistryError, import_csv, make_camera, split_credentials


def test_credentials_are_split_from_the_url_and_never_public() -> None:
    cam = make_camera("c1", "Gate", "Jung-gu", "37.56", "126.97", "rtsp://admin:p%40ss@10.1.2.3:554/Streaming/101")
    assert cam.url == "rtsp://10.1.2.3:554/Streaming/101"
    assert (cam.username, cam.password) == ("admin", "p@ss")
    public = cam.public()
    assert "p@ss" not in repr(public) and "url" not in public and "password" not in public


def test_split_credentials_ipv6() -> None:
    assert split_credentials("rtsp://u:p@[fe80::1]:8554/x") == ("rtsp://[fe80::1]:8554/x", "u", "p")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (("", "n", "d", 1, 1, "rtsp://h/"), "id"),
        (("c", "n", "d", "north", 1, "rtsp://h/"), "lat is not a number"),
        (("c", "n", "d", 91, 1, "rtsp://h/"), "lat out of range"),
        (("c", "n", "d", 1, 1, "http://h/"), "rtsp://"),
    ],
)
def test_invalid_records_say_which_field(fields: tuple, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        make_camera(*fields)


def test_import_csv_upserts_and_a_bad_row_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    good = tmp_path / "good.csv"
    good.write_text(
        "id,name,district,lat,lon,url,substream_url\n"
        "a,Cam A,Jung-gu,37.5,126.9,rtsp://u:p@h/a,rtsp://h/a-sub\n"
        "b,Cam B,Mapo-gu,37.6,126.8,rtsp://h/b,\n"
    )
    registry = Registry(db)
    assert import_csv(registry, good) == 2
    assert registry.get("a").substream_url == "rtsp://h/a-sub"  # type: ignore[union-attr]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name,district,lat,lon,url\nc,Cam C,x,1,1,rtsp://h/c\nd,Cam D,x,1,1,ftp://h/d\n")
    with pytest.raises(RegistryError, match=r"bad\.csv:3"):
        import_csv(registry, bad)
    assert registry.count() == 2
    registry.close()


def test_missing_columns(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text("id,name,lat\n")
    with pytest.raises(RegistryError, match="missing column"):
        import_csv(Registry(tmp_path / "r.db"), f)


def test_cli_import_add_list_never_prints_credentials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "g.db")
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("id,name,district,lat,lon,url\nx1,Hall,Jung-gu,37.56,126.97,rtsp://root:hunter2@h/x\n")
    assert main(["cameras", "import", "--db", db, str(csv_file)]) == 0
    assert main(["cameras", "add", "--db", db, "--id", "x2", "--name", "Gate", "--lat", "37.5", "--lon",
                 "126.9", "--url", "rtsp://h/y"]) == 0  # fmt: skip
    assert main(["cameras", "list", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "x1\tHall" in out and "x2\tGate" in out and "hunter2" not in out
    row = sqlite3.connect(db).execute("SELECT url, password FROM cameras WHERE id='x1'").fetchone()
    assert row[0] == "rtsp://h/x" and row[1].startswith("$gtbox1$") and "hunter2" not in row[1]  # sealed at rest
    camera = Registry(db).get("x1")
    assert camera is not None and camera.password == "hunter2"  # what a worker reads
    assert main(["cameras", "add", "--db", db, "--id", "x3", "--name", "n", "--lat", "99", "--lon", "1",
                 "--url", "rtsp://h/"]) == 2  # fmt: skip


def test_serve_options_reach_the_worker_settings() -> None:
    from mediaserver.cli.commands import _parser, _settings

    args = _parser().parse_args(
        ["serve", "--db", "x.db", "--http", "0.0.0.0:9000", "--transport", "udp", "--first-picture", "gop",
         "--ice-host", "127.0.0.1", "--cors-origin", "https://portal.example"]
    )  # fmt: skip
    settings = _settings(args)
    assert (settings.db, settings.host, settings.port) == ("x.db", "0.0.0.0", 9000)
    assert settings.cors_origins == ["https://portal.example"]
    worker = settings.worker
    assert (worker.transport, worker.first_picture, worker.ice_hosts) == ("udp", "gop", ["127.0.0.1"])


def test_changes_since_a_revision_and_no_op_upserts_change_nothing(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.db")
    start = registry.revision()
    registry.upsert(
        [make_camera("a", "A", "", 37.5, 127.0, "rtsp://u:p@h/a"), make_camera("b", "B", "", 1, 1, "rtsp://h/b")]
    )
    first = registry.changes(start)
    assert sorted(c.id for c in first.changed) == ["a", "b"] and first.removed == []
    assert registry.changes(first.revision).changed == []

    registry.upsert([make_camera("a", "A", "", 37.5, 127.0, "rtsp://u:p@h/a")])  # the same row again
    assert registry.revision() == first.revision
    registry.upsert([make_camera("a", "A", "", 37.5, 127.0, "rtsp://u:new@h/a")])  # new password
    second = registry.changes(first.revision)
    assert [(c.id, c.password) for c in second.changed] == [("a", "new")] and second.removed == []

    assert registry.remove("b")
    third = registry.changes(second.revision)
    assert third.changed == [] and third.removed == ["b"]
    registry.add(make_camera("b", "B", "", 1, 1, "rtsp://h/b"))  # back again: a change, not a removal
    fourth = registry.changes(third.revision)
    assert [c.id for c in fourth.changed] == ["b"] and fourth.removed == []
    assert registry.changes(start).removed == []  # b exists now: no tombstone left
    registry.close()


def test_writes_by_other_processes_and_plain_sql_are_tracked(tmp_path: Path) -> None:
    db = str(tmp_path / "g.db")
    registry = Registry(db)
    seen = registry.revision()
    argv = [sys.executable, "-m", "mediaserver.cli", "cameras", "add", "--db", db, "--id", "x1", "--name", "Gate",
            "--lat", "37.5", "--lon", "126.9", "--url", "rtsp://h/y"]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    changes = registry.changes(seen)
    assert [c.id for c in changes.changed] == ["x1"]
    other = sqlite3.connect(db)  # a script with no idea of revisions
    with other:
        other.execute("UPDATE cameras SET url='rtsp://h/z' WHERE id='x1'")
        other.execute("UPDATE cameras SET id='x2' WHERE id='x1'")
    other.close()
    later = registry.changes(changes.revision)
    assert [(c.id, c.url) for c in later.changed] == [("x2", "rtsp://h/z")] and later.removed == ["x1"]
    registry.close()


def test_a_registry_made_before_change_tracking_is_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    old = sqlite3.connect(db)
    old.execute("CREATE TABLE cameras (id TEXT PRIMARY KEY, name TEXT NOT NULL, district TEXT NOT NULL DEFAULT '', "
                "lat REAL NOT NULL, lon REAL NOT NULL, url TEXT NOT NULL, username TEXT, password TEXT, "
                "substream_url TEXT)")  # fmt: skip
    old.execute("INSERT INTO cameras VALUES ('a', 'A', '', 1, 1, 'rtsp://h/a', NULL, NULL, NULL)")
    old.commit()
    old.close()
    registry, again = Registry(db), Registry(db)  # two processes opening it at once is fine too
    revision, cameras = registry.snapshot()
    assert [c.id for c in cameras] == ["a"] and registry.get("a") == cameras[0]
    again.upsert([make_camera("a", "A2", "", 1, 1, "rtsp://h/a")])
    assert [c.name for c in registry.changes(revision).changed] == ["A2"]
    registry.close()
    again.close()
