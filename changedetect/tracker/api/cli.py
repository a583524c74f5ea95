"""``changedetect tracker serve | user | token | webhook``: the API's commands.

Wired into the tracker CLI by :func:`add_api_commands` (see its docstring for the two lines the
tracker's parser needs). Every command takes the same ``--db`` as the other tracker commands.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from ..settings import API_BUSY_WAIT_S

#: ``auth.DEFAULT_TOKEN_LIFETIME``, repeated so that building the parser imports no SQLAlchemy.
DEFAULT_TOKEN_LIFETIME = dt.timedelta(days=90)
#: Where serve listens by default: this machine only. Exposing the API is a deliberate act
#: (``--host 0.0.0.0``), best behind a TLS-terminating proxy (then add ``--cookie-secure``).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _open(args: argparse.Namespace) -> Any:
    from ..cli import db_url_of
    from ..db import TrackerDB

    url = db_url_of(args)
    return TrackerDB.open(url, migrate=url.startswith("sqlite"))


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the API and review page with uvicorn until interrupted."""
    from ..cli import db_url_of
    from ..db import TrackerDB
    from .serving import ServeOptions, evidence_folders, serve

    if args.workers < 1:
        raise SystemExit("changedetect: error: --workers must be at least 1")
    options = ServeOptions(
        evidence_roots=evidence_folders(args.evidence_root),
        cookie_secure=args.cookie_secure,
        busy_wait_s=args.busy_wait,
        basemap_url=args.basemap_url,
        basemap_attribution=args.basemap_attribution or "",
        photo_dir=str(Path(args.photo_dir).resolve()) if args.photo_dir else None,
    )
    url = db_url_of(args)
    serve(
        options,
        url,
        host=args.host,
        port=args.port,
        workers=args.workers,
        open_db=lambda u: TrackerDB.open(u, migrate=u.startswith("sqlite")),
        announce=_out,
    )
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    """Create a user."""
    from ..auth import add_user

    with _open(args) as db:
        user = add_user(db, args.name, args.role, county=args.county)
    scope = f" (county {user.county})" if user.role == "officer" else ""
    _out(f"user {user.name}: {user.role}{scope}")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    """List users."""
    from ..auth import list_users

    with _open(args) as db, db.session() as session:
        for user, active, tokens in list_users(session):
            flag = "" if active else "  [disabled]"
            _out(f"{user.name:<24} {user.role:<8} {user.county or '-':<16} {tokens} token(s){flag}")
    return 0


def cmd_user_active(args: argparse.Namespace) -> int:
    """Disable or re-enable a user."""
    from ..auth import set_user_active

    with _open(args) as db:
        set_user_active(db, args.name, args.user_command == "enable")
    _out(f"user {args.name} {args.user_command}d")
    return 0


def _days(text: str) -> dt.timedelta:
    try:
        days = int(text)
    except ValueError:
        days = 0
    if days < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days, 1 or more")
    return dt.timedelta(days=days)


def _show_new_token(token: str, user: str, expires: dt.datetime, what: str) -> None:
    sys.stderr.write(
        f"{what} for {user}, valid until {expires:%Y-%m-%d %H:%M} UTC (shown once; keep it "
        "secret, revoke with `token revoke`):\n"
    )
    _out(token)  # stdout holds just the token, for scripts


def cmd_token_create(args: argparse.Namespace) -> int:
    """Create a token and print it, once: only its hash is kept."""
    from ..auth import create_token
    from ..clock import utc_now

    now = utc_now()
    with _open(args) as db:
        token = create_token(db, args.name, label=args.label, lifetime=args.expires_in, now=now)
    _show_new_token(token, args.name, now + args.expires_in, "token")
    return 0


def cmd_token_rotate(args: argparse.Namespace) -> int:
    """Replace a token by a new one: the old value stops working at once."""
    from ..auth import rotate_token
    from ..clock import utc_now

    now = utc_now()
    with _open(args) as db:
        token = rotate_token(db, args.name, prefix=args.prefix, lifetime=args.expires_in, now=now)
    _show_new_token(token, args.name, now + args.expires_in, "new token (the old one is revoked)")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    """List tokens by prefix (never the tokens themselves) with their expiry and status."""
    from ..auth import list_tokens
    from ..clock import utc_now

    now = utc_now()
    with _open(args) as db, db.session() as session:
        for t in list_tokens(session, args.name):
            _out(
                f"{t.user:<24} {t.prefix:<12} {t.status(now):<8} "
                f"expires {t.expires_at:%Y-%m-%d}  {t.label or ''}".rstrip()
            )
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    """Revoke a user's tokens."""
    from ..auth import revoke_tokens

    with _open(args) as db:
        count = revoke_tokens(db, args.name, prefix=args.prefix)
    _out(f"{count} token(s) of {args.name} revoked")
    return 0


def cmd_webhook_deliver(args: argparse.Namespace) -> int:
    """One bounded delivery pass over the outbox."""
    from ...errors import ConfigError
    from ..webhook import URL_ENV_VAR, WebhookConfig, deliver_pending

    config = WebhookConfig.from_env(budget_s=args.budget)
    if config is None:
        raise ConfigError(f"no webhook configured: set ${URL_ENV_VAR} (and its secret)")
    with _open(args) as db:
        report = deliver_pending(db, config)
    _out(report.summary())
    return 0


def cmd_webhook_requeue(args: argparse.Namespace) -> int:
    """Re-arm events parked as dead."""
    from ..webhook import requeue_dead

    with _open(args) as db:
        _out(f"{requeue_dead(db)} event(s) re-queued")
    return 0


def cmd_webhook_secret(args: argparse.Namespace) -> int:
    """Print a new signing secret (shown once, like a token; nothing stores it)."""
    from ..webhook import new_secret

    _out(new_secret())
    return 0


def _add_lifetime(parser: argparse.ArgumentParser) -> None:
    days = DEFAULT_TOKEN_LIFETIME.days
    parser.add_argument(
        "--expires-in",
        type=_days,
        default=DEFAULT_TOKEN_LIFETIME,
        metavar="DAYS",
        help=f"days until the token stops working (default: {days})",
    )


def add_api_commands(subparsers: Any, *, db_parent: argparse.ArgumentParser) -> None:
    """Add ``serve``, ``user``, ``token`` and ``webhook`` to the tracker's subparsers.

    In :func:`changedetect.tracker.cli.build_tracker_parser`, after the other commands::

        from .api.cli import add_api_commands
        add_api_commands(sub, db_parent=db)

    (``sub`` is the tracker's subparsers, ``db`` the parent parser holding ``--db``.) Nothing
    heavy is imported until a command runs.
    """
    p = subparsers.add_parser(
        "serve",
        parents=[db_parent],
        help="run the HTTP API and review page",
        description="Serve the API and /review with uvicorn. A webhook is used when "
        "$CHANGEDETECT_WEBHOOK_URL is set, with its secret in $CHANGEDETECT_WEBHOOK_SECRET "
        "or in the file named by $CHANGEDETECT_WEBHOOK_SECRET_FILE.",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"default: {DEFAULT_HOST}")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}")
    p.add_argument(
        "--evidence-root",
        action="append",
        metavar="DIR",
        help="folder chips may be served from (repeatable; default: each clues file's folder)",
    )
    p.add_argument(
        "--cookie-secure", action="store_true", help="mark the session cookie Secure (HTTPS)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes answering requests (default: 1; about one per core serves the "
        "most requests a second)",
    )
    p.add_argument(
        "--busy-wait",
        type=float,
        default=API_BUSY_WAIT_S,
        metavar="SECONDS",
        help="how long a write waits for another writer (an ingest) before answering 503 with "
        f"Retry-After (default: {API_BUSY_WAIT_S:g})",
    )
    p.add_argument(
        "--basemap-url",
        metavar="URL",
        help="tile server under the review page's map, e.g. "
        "'https://tiles.example.org/{z}/{x}/{y}.png' (WGS84 Web Mercator tiles: GCJ-02 ones "
        "such as Amap's are offset from the cases). Browsers then load tiles from that origin; "
        "default: no basemap, nothing loaded from outside",
    )
    p.add_argument(
        "--basemap-attribution",
        metavar="TEXT",
        help="the credit the tile server's licence asks for, shown on the map",
    )
    p.add_argument(
        "--photo-dir",
        metavar="DIR",
        help="folder the field photos are kept in (default: photos/ beside a SQLite database; "
        "required for PostgreSQL); not inside an --evidence-root",
    )
    p.set_defaults(func=cmd_serve)

    users = subparsers.add_parser("user", help="API users and their roles")
    users_sub = users.add_subparsers(dest="user_command", required=True, metavar="COMMAND")
    p = users_sub.add_parser("add", parents=[db_parent], help="create a user")
    p.add_argument("name", help="user name (recorded as the actor of its changes)")
    p.add_argument("--role", required=True, choices=("analyst", "officer", "viewer"))
    p.add_argument("--county", help="the officer's county (required for officers)")
    p.set_defaults(func=cmd_user_add)
    p = users_sub.add_parser("list", parents=[db_parent], help="list users")
    p.set_defaults(func=cmd_user_list)
    for action in ("disable", "enable"):
        p = users_sub.add_parser(action, parents=[db_parent], help=f"{action} a user")
        p.add_argument("name")
        p.set_defaults(func=cmd_user_active)

    tokens = subparsers.add_parser("token", help="API tokens")
    tokens_sub = tokens.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    p = tokens_sub.add_parser(
        "create", parents=[db_parent], help="create a token and print it once"
    )
    p.add_argument("name", help="the user the token acts as")
    p.add_argument("--label", help="what the token is for (shown in listings)")
    _add_lifetime(p)
    p.set_defaults(func=cmd_token_create)
    p = tokens_sub.add_parser(
        "rotate", parents=[db_parent], help="replace a token by a new one (the old one stops)"
    )
    p.add_argument("name")
    p.add_argument("--prefix", help="the token to rotate, when the user has several live ones")
    _add_lifetime(p)
    p.set_defaults(func=cmd_token_rotate)
    p = tokens_sub.add_parser(
        "revoke", parents=[db_parent], help="revoke a user's tokens (and end their sessions)"
    )
    p.add_argument("name")
    p.add_argument("--prefix", help="only the token starting with this (e.g. cdt_AbC123)")
    p.set_defaults(func=cmd_token_revoke)
    p = tokens_sub.add_parser("list", parents=[db_parent], help="list tokens and their expiry")
    p.add_argument("name", nargs="?", help="only this user's tokens")
    p.set_defaults(func=cmd_token_list)

    hooks = subparsers.add_parser("webhook", help="the webhook outbox")
    hooks_sub = hooks.add_subparsers(dest="webhook_command", required=True, metavar="COMMAND")
    p = hooks_sub.add_parser(
        "deliver", parents=[db_parent], help="deliver queued events now (bounded)"
    )
    p.add_argument("--budget", type=float, default=60.0, help="seconds at most (default: 60)")
    p.set_defaults(func=cmd_webhook_deliver)
    p = hooks_sub.add_parser("requeue", parents=[db_parent], help="retry events parked as dead")
    p.set_defaults(func=cmd_webhook_requeue)
    p = hooks_sub.add_parser(
        "secret",
        help="print a new whsec_ signing secret",
        description="Print a new Standard Webhooks signing secret (whsec_<base64 of 32 random "
        "bytes>). Give it to the receiver and to the tracker through "
        "$CHANGEDETECT_WEBHOOK_SECRET or a file named by $CHANGEDETECT_WEBHOOK_SECRET_FILE. "
        "To rotate, give the tracker the new and the old one space-separated "
        '("whsec_new whsec_old"): requests are signed with both until the old is dropped.',
    )
    p.set_defaults(func=cmd_webhook_secret)


__all__ = ["add_api_commands"]
