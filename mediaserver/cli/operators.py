"""`mediaserver operators ...`: console accounts (signaling/operators.py) beside a running server."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from signaling.access import offline
from signaling.operators import ROLES, OperatorError


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    operators = commands.add_parser("operators", help="operators who sign in to the console")
    actions = operators.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="create an account; prints a one-time password (or reads one from stdin)")
    add.add_argument("--db", default="goldentime.db")
    add.add_argument("--agency", required=True, help="agency id, a slug such as police-112")
    add.add_argument("--username", required=True)
    add.add_argument(
        "--role", choices=ROLES, default="operator",
        help="operator, supervisor (also adds their agency's operators), auditor (the audit log), "
        "city-admin (every camera, ops, any agency's accounts)",
    )  # fmt: skip
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
    add.add_argument("--json", action="store_true", help='print {"operator_id", "username", "password"?}')
    add.set_defaults(func=_add)
    ls = actions.add_parser("list", help="list accounts (no passwords)")
    ls.add_argument("--db", default="goldentime.db")
    ls.add_argument("--agency", default=None)
    ls.set_defaults(func=_list)
    for name, what in (("disable", "refuse its sign-in; its sessions, tokens and live views end"),
                       ("enable", "let a disabled account in again")):  # fmt: skip
        toggle = actions.add_parser(name, help=what)
        toggle.add_argument("--db", default="goldentime.db")
        toggle.add_argument("username")
        toggle.set_defaults(func=_toggle, disabled=name == "disable")


def _add(args: argparse.Namespace) -> int:
    given = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else None
    access = offline(args.db)
    try:
        operator, password = access.add_operator(args.agency, args.username, args.role, given, operator="cli")
    except OperatorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        access.close()
    doc = {**operator.public(), **({} if given is not None else {"password": password})}
    if args.json:
        print(json.dumps(doc))
    elif given is None:
        print(f"{operator.username} ({operator.role}, {operator.agency})\npassword: {password}\n"
              "(shown only now: hand it over in person)")  # fmt: skip
    else:
        print(f"{operator.username} ({operator.role}, {operator.agency}) added")
    return 0


def _list(args: argparse.Namespace) -> int:
    access = offline(args.db)
    try:
        for o in access.operators.list(args.agency):
            print(f"{o.username}\t{o.agency}\t{o.role}\t{o.operator_id}")
    finally:
        access.close()
    return 0


def _toggle(args: argparse.Namespace) -> int:
    access = offline(args.db)
    try:
        found = asyncio.run(access.set_operator_disabled(args.username, args.disabled, operator="cli"))
    finally:
        access.close()
    if not found:
        print(f"error: no operator {args.username}", file=sys.stderr)
        return 2
    print(f"{args.username} {'disabled' if args.disabled else 'enabled'}")
    return 0
