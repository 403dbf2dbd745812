"""Secrets at rest (issue 15 item 2): the database and key files are private to the server's user, signing keys
and camera passwords are in the database only sealed under the operator's master key, older clear rows are
sealed on open, a wrong master key is refused by name, and `keys rotate-master` reseals everything."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from helpers.access import FAST

from mediaserver import secret_box
from mediaserver.cli import main as cli
from mediaserver.registry import Registry, make_camera
from mediaserver.secret_box import ENV_KEY_FILE, SecretBoxError
from signaling.access import Access

PASSWORD = "hunter2-Seoul"


@pytest.fixture(autouse=True)
def fresh_keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test resolves its own master key; the CLI's --key-file (an environment variable) is undone after."""
    monkeypatch.setenv(ENV_KEY_FILE, "")  # empty: unset; restored after whatever the CLI set
    secret_box.forget()
    yield
    secret_box.forget()


def password(registry: Registry, camera_id: str = "c1") -> str | None:
    camera = registry.get(camera_id)
    assert camera is not None
    return camera.password


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def open_access(db: Path) -> Access:
    async def no_sessions(session_id: str) -> None:
        pass

    return Access(db, no_sessions, list, FAST)


def populate(db: Path) -> tuple[str, str]:
    """A camera with a password and a signing key; returns (kid, the key's PEM)."""
    registry = Registry(db)
    registry.add(make_camera("c1", "Gate", "Jung-gu", 37.56, 126.97, f"rtsp://admin:{PASSWORD}@10.1.2.3/s"))
    registry.close()
    access = open_access(db)
    key = access.keys.signing_key()
    pem = key.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()  # fmt: skip
    access.close()
    return key.kid, pem


def test_database_side_files_and_key_are_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    db = tmp_path / "gt.db"
    old = os.umask(0o022)
    try:
        registry = Registry(db)
        access = open_access(db)
        access.keys.signing_key()
        registry.add(make_camera("c1", "Gate", "", 37.5, 126.9, "rtsp://u:p@h/x"))
        files = [db, tmp_path / "gt.db-wal", tmp_path / "gt.db-shm", tmp_path / "gt.db.key"]
        assert all(f.exists() for f in files), list(tmp_path.iterdir())
        assert {f.name: oct(mode(f)) for f in files} == {f.name: "0o600" for f in files}
        access.close()
        registry.close()
    finally:
        os.umask(old)


def test_an_existing_world_readable_database_is_narrowed_on_open(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.commit()
    os.chmod(db, 0o644)
    for side in ("-wal", "-shm"):
        os.chmod(tmp_path / f"old.db{side}", 0o644)
    Registry(db).close()
    con.close()
    assert mode(db) == 0o600
    assert all(mode(p) == 0o600 for p in tmp_path.glob("old.db-*"))


def test_a_database_read_alone_yields_no_private_key_and_no_password(tmp_path: Path) -> None:
    db = tmp_path / "gt.db"
    kid, pem = populate(db)
    dump = "\n".join(sqlite3.connect(db).iterdump())
    assert kid in dump and "PRIVATE KEY" not in dump and PASSWORD not in dump
    assert pem.splitlines()[1] not in dump  # not even a line of the key's base64
    sealed = sqlite3.connect(db).execute("SELECT private_pem FROM signing_keys").fetchone()[0]
    assert sealed.startswith("$gtbox1$")
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(sealed.encode(), None)
    # ... and with the master key (beside the database by default) they open again
    assert password(Registry(db)) == PASSWORD
    assert open_access(db).keys.signing_key().kid == kid


def test_clear_rows_from_an_older_database_are_sealed_on_open(tmp_path: Path) -> None:
    db = tmp_path / "gt.db"
    kid, pem = populate(db)
    con = sqlite3.connect(db)  # as the previous release stored them: in clear
    con.execute("UPDATE signing_keys SET private_pem=?", (pem,))
    con.execute("DROP TRIGGER cameras_changed")  # plain SQL, unseen by change tracking
    con.execute("UPDATE cameras SET password=?", (PASSWORD,))
    con.commit()
    registry = Registry(db)
    assert password(registry) == PASSWORD
    access = open_access(db)
    assert access.keys.signing_key().kid == kid
    rows = con.execute("SELECT (SELECT private_pem FROM signing_keys), (SELECT password FROM cameras)").fetchone()
    assert all(value.startswith("$gtbox1$") for value in rows), rows
    access.close()
    registry.close()


def test_a_sealed_value_is_bound_to_its_row(tmp_path: Path) -> None:
    db = tmp_path / "gt.db"
    populate(db)
    registry = Registry(db)
    registry.add(make_camera("c2", "Other", "", 37.5, 126.9, "rtsp://admin:other@h/x"))
    con = sqlite3.connect(db)
    con.execute("UPDATE cameras SET password=(SELECT password FROM cameras WHERE id='c1') WHERE id='c2'")
    con.commit()
    with pytest.raises(SecretBoxError, match="another row"):
        password(registry, "c2")
    registry.close()


def test_a_wrong_master_key_is_refused_naming_both_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "gt.db"
    populate(db)
    stranger = tmp_path / "other.key"
    assert secret_box.new_key_file(stranger)
    with pytest.raises(SecretBoxError, match=r"sealed under master key [0-9a-f]{12}, but .*other\.key holds key"):
        Registry(db, secret_box.read_key_file(stranger))
    assert cli(["cameras", "list", "--db", str(db), "--key-file", str(stranger)]) == 2
    assert "pass the right --key-file" in capsys.readouterr().err


def test_subkeys_are_per_purpose_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "k"
    secret_box.new_key_file(path)
    a, b = secret_box.read_key_file(path), secret_box.read_key_file(path)
    keys = {p: a.derive(p) for p in secret_box.PURPOSES}
    assert len(set(keys.values())) == len(keys) and all(len(k) == 32 for k in keys.values())
    assert keys == {p: b.derive(p) for p in secret_box.PURPOSES}
    assert mode(path) == 0o600


def test_rotate_master_reseals_keys_and_camera_credentials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, old_key, new_key = tmp_path / "gt.db", tmp_path / "old.key", tmp_path / "new.key"
    secret_box.new_key_file(old_key)
    k = ["--db", str(db), "--key-file", str(old_key)]
    assert cli(["cameras", "add", "--id", "c1", "--name", "Gate", "--lat", "37.5", "--lon", "126.9",
                "--url", f"rtsp://admin:{PASSWORD}@h/x", *k]) == 0  # fmt: skip
    assert cli(["keys", "rotate", *k]) == 0
    access = open_access(db)
    jwks = access.keys.jwks()
    client, _ = access.add_client("police-112", "112 CAD")
    token, _ = access.issue_api_token(client, None)
    access.close()
    before = sqlite3.connect(db).execute("SELECT password FROM cameras").fetchone()[0]

    secret_box.forget()
    assert cli(["keys", "rotate-master", "--new-key-file", str(new_key), *k]) == 0
    assert "resealed 2 secret(s)" in capsys.readouterr().out and mode(new_key) == 0o600
    after = sqlite3.connect(db).execute("SELECT password FROM cameras").fetchone()[0]
    assert after != before and after.startswith("$gtbox1$")

    secret_box.forget()
    with pytest.raises(SecretBoxError, match="sealed under master key"):
        Registry(db, secret_box.read_key_file(old_key))  # the old key opens nothing now
    assert password(Registry(db, secret_box.read_key_file(new_key))) == PASSWORD
    assert cli(["cameras", "list", "--db", str(db), "--key-file", str(old_key)]) == 2
    assert cli(["keys", "list", "--db", str(db), "--key-file", str(new_key)]) == 0
    access = open_access(db)  # the CLI's --key-file is the process's key now
    assert access.keys.jwks() == jwks and access.tokens.verify(token, access.settings.tokens.api_audience)
    [record] = access.audit.query(event="key.master_rotated")
    assert record["detail"]["values"] == 2
    access.close()
    assert cli(["keys", "rotate-master", "--new-key-file", str(new_key), "--db", str(db)]) == 2  # same key


def test_processes_opening_a_new_database_at_once_share_one_generated_key(tmp_path: Path) -> None:
    """The supervisor's workers and the front open the registry together: the key beside it is made once."""
    db = tmp_path / "gt.db"
    code = "import sys; from mediaserver.registry import Registry; print(Registry(sys.argv[1])._box.key_id)"
    env = {k: v for k, v in os.environ.items() if k != ENV_KEY_FILE}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(4)]  # fmt: skip
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len({out.strip() for out, _ in outs}) == 1 and mode(tmp_path / "gt.db.key") == 0o600
