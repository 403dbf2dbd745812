"""`mediaserver` command line: serve, demo, and the camera registry.

This is the composition root: it may start the front (signaling/) as well as the worker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mediaserver.bridge import START_POLICIES
from mediaserver.registry import Registry, RegistryError, import_csv, make_camera
from mediaserver.rtsp.batch_reader import IDLE_READ_MS
from mediaserver.secret_box import ENV_KEY_FILE, SecretBoxError, use_key_file
from signaling.clients import ROLES

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterator

    from mediaserver.cli.serve import ServerSettings
    from signaling.access import Access


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "key_file", None):
        use_key_file(args.key_file)  # this process and the workers it starts
    try:
        return int(args.func(args) or 0)
    except (RegistryError, SecretBoxError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediaserver", description="Goldentime media server")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="ingest every registered camera and serve WHEP + the console")
    _server_options(serve)
    serve.set_defaults(func=_serve)

    demo = commands.add_parser("demo", help="start simulated cameras and serve them (zero setup)")
    _server_options(demo, db_default="goldentime-demo.db")
    demo.add_argument("--cameras", type=int, default=4, help="number of simulated cameras")
    demo.set_defaults(func=_demo)

    cameras = commands.add_parser("cameras", help="the camera registry").add_subparsers(dest="action", required=True)
    imp = cameras.add_parser("import", help="import cameras from CSV: id,name,district,lat,lon,url[,substream_url]")
    imp.add_argument("--db", default="goldentime.db")
    imp.add_argument("file", type=Path)
    imp.set_defaults(func=_import)

    add = cameras.add_parser("add", help="add or update one camera")
    add.add_argument("--db", default="goldentime.db")
    for name in ("id", "name", "url"):
        add.add_argument(f"--{name}", required=True)
    add.add_argument("--district", default="")
    add.add_argument("--lat", type=float, required=True)
    add.add_argument("--lon", type=float, required=True)
    add.add_argument("--substream-url")
    add.set_defaults(func=_add)

    ls = cameras.add_parser("list", help="list cameras (credentials are never shown)")
    ls.add_argument("--db", default="goldentime.db")
    ls.set_defaults(func=_list)

    _clients_commands(commands)
    _keys_commands(commands)
    _audit_commands(commands)
    _key_file_options(parser)
    return parser


def _key_file_options(parser: argparse.ArgumentParser) -> None:
    """`--key-file` on every command that opens a database (mediaserver/secret_box.py)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _key_file_options(sub)
    if any("--db" in a.option_strings for a in parser._actions):
        parser.add_argument("--key-file", type=Path, help=f"the master key sealing the database's secrets (default: "
                            f"${ENV_KEY_FILE}, else <db>.key, generated on first use)")  # fmt: skip


def _clients_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from mediaserver.cli import operators

    operators.add_commands(commands)  # console accounts: mediaserver/cli/operators.py
    clients = commands.add_parser("clients", help="agency apps and auditors that call the API")
    actions = clients.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="register a client; prints its id and secret once")
    add.add_argument("--db", default="goldentime.db")
    add.add_argument("--agency", required=True, help="agency id, a slug such as police-112 or fire-119")
    add.add_argument("--name", required=True, help="what the app is, e.g. '112 CAD'")
    add.add_argument(
        "--role", choices=ROLES, default="agency",
        help="agency: incidents and tokens; auditor: the audit log; admin: ops (resizing workers), every camera",
    )  # fmt: skip
    add.add_argument("--json", action="store_true", help='print {"client_id": ..., "client_secret": ...}')
    add.set_defaults(func=_clients_add)
    ls = actions.add_parser("list", help="list clients (secrets are never shown)")
    ls.add_argument("--db", default="goldentime.db")
    ls.set_defaults(func=_clients_list)
    for name, what in (("disable", "refuse its credentials and tokens; its live views end within a second"),
                       ("enable", "let a disabled client in again")):  # fmt: skip
        toggle = actions.add_parser(name, help=what)
        toggle.add_argument("--db", default="goldentime.db")
        toggle.add_argument("client_id")
        toggle.set_defaults(func=_clients_toggle, disabled=name == "disable")
    rotate = actions.add_parser("rotate", help="a new client secret, printed once; the old one stops working")
    rotate.add_argument("--db", default="goldentime.db")
    rotate.add_argument("client_id")
    rotate.add_argument("--revoke-tokens", action="store_true", help="also revoke its tokens (their views end)")
    rotate.add_argument("--json", action="store_true", help='print {"client_id": ..., "client_secret": ...}')
    rotate.set_defaults(func=_clients_rotate)


def _keys_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="token signing keys").add_subparsers(dest="action", required=True)
    rotate = keys.add_parser("rotate", help="publish a new signing key; it signs after --publish-ahead seconds")
    rotate.add_argument("--db", default="goldentime.db")
    rotate.add_argument("--publish-ahead", type=float, default=None, help="seconds in the JWKS before signing")
    rotate.set_defaults(func=_keys_rotate)
    ls = keys.add_parser("list", help="list keys and their states (no private material)")
    ls.add_argument("--db", default="goldentime.db")
    ls.set_defaults(func=_keys_list)
    master = keys.add_parser(
        "rotate-master", help="reseal signing keys and camera credentials under a new master key (server stopped)"
    )
    master.add_argument("--db", default="goldentime.db")
    master.add_argument("--new-key-file", type=Path, required=True, help="the new key (created 0600 if missing)")
    master.set_defaults(func=_keys_rotate_master)


def _audit_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="the audit log").add_subparsers(dest="action", required=True)
    verify = audit.add_parser("verify", help="check the hash chain (exit 1 if broken)")
    verify.add_argument("--db", default="goldentime.db")
    verify.set_defaults(func=_audit_verify)
    export = audit.add_parser("export", help="write the audit log as CSV or JSON")
    export.add_argument("--db", default="goldentime.db")
    export.add_argument("--format", choices=("csv", "json"), default="json")
    export.add_argument("--out", type=Path, help="file to write (default: stdout)")
    for name in ("camera", "incident", "agency"):
        export.add_argument(f"--{name}")
    export.set_defaults(func=_audit_export)
    roll = audit.add_parser("rollover", help="archive and remove old records; the chain carries on (see README)")
    roll.add_argument("--db", default="goldentime.db")
    roll.add_argument("--keep-days", type=float, required=True, help="keep records newer than this many days")
    roll.add_argument("--archive", type=Path, help="archive file (default: <db>.audit-<seq>.json)")
    roll.set_defaults(func=_audit_rollover)


def _server_options(p: argparse.ArgumentParser, db_default: str = "goldentime.db") -> None:
    p.add_argument("--db", default=db_default, help="SQLite registry (default %(default)s)")
    p.add_argument("--http", default="127.0.0.1:8080", help="HOST:PORT to serve on (default %(default)s)")
    p.add_argument("--cors-origin", action="append", default=[], help="an origin allowed to call WHEP/API (repeatable)")
    p.add_argument("--transport", choices=("tcp", "udp"), default="tcp", help="RTSP transport to cameras")
    p.add_argument("--ice-host", action="append", default=None, help="only offer ICE host candidates on this address")
    p.add_argument(
        "--viewer-networks",
        type=_cidrs,
        default=None,
        metavar="CIDR,...",
        help="networks viewers' ICE candidates may point into (the server sends STUN checks there); default any "
        "address but loopback, link-local and this server's own (loopback only when every --ice-host is loopback)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="media worker processes (default: one per core, %(default)s); 0 or 1 runs the worker in-process",
    )
    p.add_argument(
        "--idle-read-ms",
        type=float,
        default=IDLE_READ_MS,
        help="read cameras nobody watches in batches every this many ms, so one read carries many packets; a "
        "viewer's first picture and live stream are read at once whatever this is; the price of a longer interval "
        "is socket buffer memory (0: always read at once; default %(default)s)",
    )
    p.add_argument(
        "--metrics-allow",
        action="append",
        default=None,
        metavar="CIDR",
        help="addresses that may read /metrics and /ops/workers (repeatable; default loopback only)",
    )
    p.add_argument(
        "--allowed-hosts",
        type=_csv,
        default=None,
        metavar="NAME[:PORT],...",
        help="Host header values this server answers (others: 421, a DNS-rebinding guard); default the --http "
        "address, localhost, 127.0.0.1 and [::1] at its port; add the names clients and a reverse proxy use",
    )
    p.add_argument(
        "--trusted-proxies",
        type=_csv,
        default=[],
        metavar="CIDR,...",
        help="reverse proxies whose X-Forwarded-For/-Proto are believed (default none: the peer address is the client)",
    )
    p.add_argument("--secure-cookies", action="store_true",
                   help="mark the console's session cookie Secure even when TLS ends before this server")  # fmt: skip
    p.add_argument("--sessions-per-token", type=int, default=None, help="live views one stream token may hold (64)")
    p.add_argument("--sessions-per-client", type=int, default=None, help="live views one agency client may hold (256)")
    p.add_argument(
        "--first-picture",
        choices=START_POLICIES,
        default="live",
        help="how a new viewer starts: live (a fresh IDR of the newest frame; default); gop (replay the cached "
        "GOP) and keyframe (wait for the camera's next one) exist for comparison benchmarks",
    )
    p.add_argument(
        "--record-dir",
        default=None,
        help="keep a recording ring of every camera here (one directory per worker; default: none)",
    )
    p.add_argument(
        "--record-seconds",
        type=float,
        default=120.0,
        help="how far back the ring reaches, seconds (default %(default)s)",
    )
    p.add_argument("--record-max-bytes", type=int, default=0,
                   help="disk cap of the ring, all workers together (default: the window at 500 kbps per camera; "
                   "the server refuses to start when the cap or the disk can't hold the window)")  # fmt: skip


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _cidrs(value: str) -> list[str]:
    from mediaserver.viewer_networks import ViewerNetworks

    cidrs = [part.strip() for part in value.split(",") if part.strip()]
    try:
        ViewerNetworks.parse(cidrs)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return cidrs


def _settings(args: argparse.Namespace) -> ServerSettings:
    import dataclasses

    from mediaserver.cli.serve import ServerSettings, parse_http
    from mediaserver.worker import WorkerSettings
    from signaling.access import AccessSettings
    from signaling.operators import OperatorSettings
    from signaling.quotas import QuotaSettings

    host, port = parse_http(args.http)
    worker = WorkerSettings(
        transport=args.transport,
        ice_hosts=args.ice_host,
        viewer_networks=args.viewer_networks,
        first_picture=args.first_picture,
        idle_read_interval=args.idle_read_ms / 1000,
        record_dir=args.record_dir,
        record_seconds=args.record_seconds,
        record_max_bytes=args.record_max_bytes,
        record_workers=max(args.workers, 1),
    )
    extra: dict[str, object] = {"metrics_allow": args.metrics_allow} if args.metrics_allow else {}
    if args.allowed_hosts:
        extra["allowed_hosts"] = args.allowed_hosts
    caps = {k: v for k, v in (("sessions_per_token", args.sessions_per_token),
                              ("sessions_per_client", args.sessions_per_client)) if v is not None}  # fmt: skip
    access = AccessSettings(quotas=dataclasses.replace(QuotaSettings(), **caps),
                            operators=OperatorSettings(secure_cookies=args.secure_cookies))  # fmt: skip
    return ServerSettings(
        db=args.db, host=host, port=port, cors_origins=args.cors_origin, worker=worker, workers=args.workers,
        trusted_proxies=args.trusted_proxies, access=access, **extra,  # type: ignore[arg-type]
    )  # fmt: skip


def _run(coro: Coroutine[object, object, None]) -> None:
    import uvloop

    uvloop.run(coro)


def _serve(args: argparse.Namespace) -> int:
    from mediaserver.cli.serve import serve_forever

    settings = _settings(args)
    if args.record_dir is not None and not _recording_fits(args):
        return 2
    print(f"Goldentime console: http://{settings.host}:{settings.port}/", flush=True)
    _run(serve_forever(settings))
    return 0


def _recording_fits(args: argparse.Namespace) -> bool:
    """The start-up check: the cap and the disk hold the window for the registry's cameras at the expected rate."""
    from mediaserver.recording import RecordingError, check_capacity

    registry = Registry(args.db)
    cameras = registry.count()
    registry.close()
    try:
        check_capacity(args.record_dir, args.record_max_bytes, args.record_seconds, cameras)
    except RecordingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    return True


def _demo(args: argparse.Namespace) -> int:
    from mediaserver.cli.demo import run_demo

    return run_demo(_settings(args), args.cameras)


def _import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    registry = Registry(args.db)
    with tqdm(unit=" cameras", desc=f"importing {args.file.name}") as bar:
        total = import_csv(registry, args.file, progress=bar.update)
    print(f"imported {total} cameras into {args.db} ({registry.count()} registered)")
    registry.close()
    return 0


def _add(args: argparse.Namespace) -> int:
    camera = make_camera(args.id, args.name, args.district, args.lat, args.lon, args.url, args.substream_url)
    registry = Registry(args.db)
    registry.add(camera)
    registry.close()
    print(f"added {camera.id}")
    return 0


def _list(args: argparse.Namespace) -> int:
    registry = Registry(args.db)
    for camera in registry.list():
        p = camera.public()
        print(f"{p['id']}\t{p['name']}\t{p['district']}\t{p['lat']:.6f},{p['lon']:.6f}")
    registry.close()
    return 0


@contextlib.contextmanager
def _access(db: str) -> Iterator[Access]:
    """The access layer over the registry's database, for one CLI command (no server needed)."""
    from signaling.access import offline

    access = offline(db)
    try:
        yield access
    finally:
        access.close()


def _clients_add(args: argparse.Namespace) -> int:
    from signaling.clients import ClientError

    with _access(args.db) as access:
        try:
            client, secret = access.add_client(args.agency, args.name, args.role, operator="cli")
        except ClientError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps({"client_id": client.client_id, "client_secret": secret}))
    else:
        print(f"client_id:     {client.client_id}\nclient_secret: {secret}\n(the secret is shown only now)")
    return 0


def _clients_list(args: argparse.Namespace) -> int:
    with _access(args.db) as access:
        for c in access.clients.list():
            print(f"{c.client_id}\t{c.agency}\t{c.role}\t{c.name}")
    return 0


def _clients_toggle(args: argparse.Namespace) -> int:
    import asyncio

    with _access(args.db) as access:
        ended = asyncio.run(access.set_client_disabled(args.client_id, args.disabled, operator="cli"))
    if ended is None:
        print(f"error: no client {args.client_id}", file=sys.stderr)
        return 2
    state = "disabled: its tokens are refused and a running server ends its views" if args.disabled else "enabled"
    print(f"{args.client_id} {state}")
    return 0


def _clients_rotate(args: argparse.Namespace) -> int:
    import asyncio

    with _access(args.db) as access:
        rotated = asyncio.run(access.rotate_client_secret(args.client_id, args.revoke_tokens, operator="cli"))
    if rotated is None:
        print(f"error: no client {args.client_id}", file=sys.stderr)
        return 2
    secret, revoked = rotated
    if args.json:
        print(json.dumps({"client_id": args.client_id, "client_secret": secret, "tokens_revoked": revoked}))
    else:
        print(f"client_id:     {args.client_id}\nclient_secret: {secret}\n(the secret is shown only now; "
              f"the old one no longer works; {revoked} token(s) revoked)")  # fmt: skip
    return 0


def _keys_rotate_master(args: argparse.Namespace) -> int:
    from mediaserver import private_files, secret_box
    from mediaserver.registry import SEALED_COLUMNS as CAMERA_SECRETS
    from signaling.keys import SEALED_COLUMNS as KEY_SECRETS

    old = secret_box.load(args.db)
    created = secret_box.new_key_file(args.new_key_file)
    new = secret_box.read_key_file(args.new_key_file)
    if new.key_id == old.key_id:
        print("error: the new key file holds the current master key", file=sys.stderr)
        return 2
    db = private_files.connect(args.db, isolation_level=None)
    try:
        count = secret_box.rotate_master(db, old, new, [*KEY_SECRETS, *CAMERA_SECRETS])
    finally:
        db.close()
    use_key_file(args.new_key_file)
    with _access(args.db) as access:
        access.audit.append("key.master_rotated", operator="cli",
                            detail={"from": old.key_id, "to": new.key_id, "values": count})  # fmt: skip
    made = "created " if created else ""
    print(
        f"resealed {count} secret(s) under {made}{args.new_key_file} (key {new.key_id}, was {old.key_id}); start "
        f"the server with --key-file {args.new_key_file} (or {ENV_KEY_FILE}) and destroy the old key's copies"
    )
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    with _access(args.db) as access:
        key = access.rotate_key(args.publish_ahead, operator="cli")
    print(f"new key {key['kid']} ({key['state']}): signs from {key['activate_at']:.0f} (unix time)")
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    with _access(args.db) as access:
        for k in access.keys.describe():
            print(f"{k['kid']}\t{k['state']}\tpublished={k['published']}")
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    with _access(args.db) as access:
        result = access.audit.verify()
    if result.ok:
        print(f"audit chain intact: {result.records} records from {result.first_seq}, anchored to {result.anchored}")
        return 0
    print(f"audit chain BROKEN at record {result.bad_seq}: {result.problem}", file=sys.stderr)
    return 1


def _audit_export(args: argparse.Namespace) -> int:
    from signaling.audit import export

    with _access(args.db) as access:
        records = access.audit.query(camera=args.camera, incident=args.incident, agency=args.agency, limit=-1)
        anchors = access.audit.anchors.lines()
    if args.out is None:
        count = export(records, sys.stdout, args.format)
    else:
        with open(args.out, "w", encoding="utf-8", newline="") as out:
            count = export(records, out, args.format)
        Path(f"{args.out}.anchors").write_text("".join(f"{line}\n" for line in anchors), encoding="utf-8")
    print(f"exported {count} records", file=sys.stderr)
    return 0


def _audit_rollover(args: argparse.Namespace) -> int:
    import time

    with _access(args.db) as access:
        tail = access.audit.db.execute("SELECT max(seq) FROM audit").fetchone()[0] or 0
        archive = args.archive or Path(f"{args.db}.audit-{tail}.json")
        try:
            count, carried = access.audit.rollover(time.time() - args.keep_days * 86400, archive)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    if count == 0:
        print("nothing older than that: no rollover")
    else:
        print(f"archived {count} records (to seq {carried}) in {archive} and {archive}.anchors; the chain carries on")
    return 0


if __name__ == "__main__":
    sys.exit(main())
