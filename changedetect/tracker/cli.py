"""``changedetect tracker ...``: the case ledger from the command line.

Wired into the main CLI by :func:`add_tracker_commands`; also runs alone as
``python -m changedetect.tracker ...``. The database is ``--db URL`` or ``--db-file PATH``, else
``$CHANGEDETECT_DB`` or ``$CHANGEDETECT_DB_FILE``, else ``sqlite:///changedetect-tracker.db``.
A URL with a password belongs in a file (a Docker or Kubernetes secret) or the environment:
on a command line every user of the machine can read it. A SQLite database is created and migrated on first
use (it is the embedded default); a PostgreSQL one is migrated explicitly with ``migrate``,
an operator's step on a shared server.

Exit codes: 0 done; 1 ``ingest`` rejected clues and stored nothing of a file (all of its
clues were rejected, or ``--strict``); 2 an error (unreadable input, database, invalid move).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..argtypes import iso_date
from ..errors import ChangeDetectError, ConfigError
from .settings import DB_ENV_VAR, DB_FILE_ENV_VAR, DEFAULT_DB_URL, TrackerSettings
from .states import CASE_STATES, TAGS

if TYPE_CHECKING:  # heavy (SQLAlchemy): imported by the commands that need it
    from .db import TrackerDB

log = logging.getLogger("changedetect.tracker")


def _out(line: str = "") -> None:
    """Results go to stdout (progress and errors go to stderr through logging)."""
    sys.stdout.write(line + "\n")


def db_url_of(args: argparse.Namespace) -> str:
    """The database URL the command line and the environment name (see the module doc)."""
    from .db import resolve_db_url

    return resolve_db_url(args.db, args.db_file)


def _open(args: argparse.Namespace) -> TrackerDB:
    """The command's database; a SQLite one is created and migrated on first use."""
    from .db import TrackerDB

    url = db_url_of(args)
    return TrackerDB.open(url, migrate=url.startswith("sqlite"))


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        west, south, east, north = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not WEST,SOUTH,EAST,NORTH in degrees"
        ) from None
    return (west, south, east, north)


def _csv_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


# --- commands ---------------------------------------------------------------------------------


#: Rejected clues whose reasons are printed; the rest are counted (all are in the rejects file).
SHOWN_REJECTS = 5


def _say_rejects(path: str, batch: Any) -> None:
    """The first reasons on stderr, so a night's log says what went wrong without the file."""
    for reject in batch.rejected[:SHOWN_REJECTS]:
        who = f"clue {reject.clue_id}" if reject.clue_id else "a clue"
        log.warning("%s: %s (feature #%d) rejected: %s", path, who, reject.index, reject.reason)
    if len(batch.rejected) > SHOWN_REJECTS:
        log.warning("%s: ... and %d more rejected", path, len(batch.rejected) - SHOWN_REJECTS)


def cmd_ingest(args: argparse.Namespace) -> int:
    """Ingest clues files (bad clues set aside in rejects files), then flag overdue cases."""
    from .clues import read_clue_batch
    from .rejects import default_rejects_path, write_rejects
    from .webhook import WebhookConfig, escalate_and_hand_off, ingest_and_hand_off

    if args.rejects and len(args.clues) > 1:
        raise ConfigError(
            "--rejects names one file: give it with one clues file, or leave it out to have "
            "each file's rejects written beside it"
        )
    settings = TrackerSettings(deadline_days=args.deadline_days, issue_probable=args.issue_probable)
    # new and changed cases go to the webhook of $CHANGEDETECT_WEBHOOK_URL, when there is one
    webhook = WebhookConfig.from_env()
    # read and check every file before touching the database: an unreadable file stores nothing
    batches = [(path, read_clue_batch(path)) for path in args.clues]
    rejects_files: dict[str, Path | None] = {}
    for path, batch in batches:
        target = Path(args.rejects) if args.rejects else default_rejects_path(path)
        rejects_files[path] = write_rejects(target, batch.rejected)
        _say_rejects(path, batch)
    if args.strict and any(batch.rejected for _, batch in batches):
        for path, batch in batches:
            total = len(batch.clues) + len(batch.rejected)
            _out(f"{path}: {len(batch.rejected)} of {total} clues rejected")
        _out("nothing stored (--strict): correct or remove the rejected clues and ingest again")
        return 1
    nothing_stored_of_a_file = False
    with _open(args) as db:
        for path, batch in batches:
            report, _ = ingest_and_hand_off(
                db, batch, webhook=webhook, settings=settings, actor=args.actor
            )
            rejects_file = rejects_files[path]
            if args.json:
                out = report.to_dict()
                out["rejects_file"] = None if rejects_file is None else str(rejects_file)
                _out(json.dumps(out, ensure_ascii=False))
            else:
                _out(f"{path}: {report.summary()}")
                if rejects_file is not None:
                    _out(f"{path}: rejected clues set aside in {rejects_file}")
            nothing_stored_of_a_file |= bool(batch.rejected) and not batch.clues
        escalated = escalate_and_hand_off(db, webhook=webhook)
        if escalated and not args.json:
            _out(f"{len(escalated)} overdue cases escalated: {', '.join(map(str, escalated))}")
    return 1 if nothing_stored_of_a_file else 0


def _query(args: argparse.Namespace) -> Any:
    from .queries import CaseQuery

    return CaseQuery(
        states=args.state or (),
        counties=args.county or (),
        change_types=args.type or (),
        tiers=args.tier or (),
        tags=args.tag or (),
        bbox=args.bbox,
        detected_from=args.since,
        detected_to=args.until,
        escalated=True if args.escalated else None,
        aoi=args.aoi,
    )


LIST_COLUMNS = (
    ("id", 5),
    ("state", 11),
    ("priority", 8),
    ("flags", 26),
    ("county", 14),
    ("type", 15),
    ("tier", 16),
    ("ha", 7),
    ("last seen", 10),
    ("deadline", 10),
)


def _flags(case: Any) -> str:
    flags = ["ESCALATED"] if case.escalated else (["overdue"] if case.overdue else [])
    flags += list(case.tags)
    if case.linked_case_id is not None:
        flags.append(f"{case.link_reason} of #{case.linked_case_id}")
    return ",".join(flags) or "-"


def _row(values: Sequence[str]) -> str:
    return "  ".join(
        str(v)[:w].ljust(w) for v, (_, w) in zip(values, LIST_COLUMNS, strict=True)
    ).rstrip()


def cmd_list(args: argparse.Namespace) -> int:
    """Print cases as a table, or one JSON object per line."""
    from .queries import iter_cases, list_cases

    query = _query(args)
    with _open(args) as db, db.session() as session:
        if args.all:
            items = iter_cases(session, query)
            total = len(items)
        else:
            page = list_cases(session, query, limit=args.limit, offset=args.offset)
            items, total = list(page.items), page.total
    if args.json:
        for case in items:
            _out(json.dumps(case.to_dict(), ensure_ascii=False))
        return 0
    _out(_row([name for name, _ in LIST_COLUMNS]))
    for c in items:
        _out(
            _row(
                [
                    str(c.id),
                    c.state,
                    c.priority,
                    _flags(c),
                    c.assigned_county or "-",
                    c.change_type,
                    c.zone_tier or "-",
                    f"{c.area_m2 / 10000:.2f}",
                    c.last_detected_on.isoformat(),
                    c.deadline.date().isoformat(),
                ]
            )
        )
    shown = f"{args.offset + 1}-{args.offset + len(items)}" if items else "none"
    _out(f"{total} cases ({shown} shown)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print one case with its history."""
    from .queries import get_case

    with _open(args) as db, db.session() as session:
        detail = get_case(session, args.case)
    if args.json:
        _out(json.dumps(detail.to_dict(), ensure_ascii=False, indent=1))
        return 0
    c = detail.case
    _out(f"case {c.id}: {c.state}, priority {c.priority}, {_flags(c)}")
    _out(f"  {c.change_type} in {c.zone or '-'} ({c.zone_tier or '-'}), county {c.county or '-'}")
    _out(f"  assigned to {c.assigned_county or '-'}, deadline {c.deadline:%Y-%m-%d}")
    _out(f"  footprint {c.area_m2 / 10000:.2f} ha around {c.centroid[0]:.5f},{c.centroid[1]:.5f}")
    _out("  detections:")
    for d in detail.detections:
        note = " (suppressed)" if d.suppressed else ""
        _out(f"    {d.detected_on}  {d.area_m2:9.0f} m²  {d.clue_id}{note}")
    _out("  events:")
    for e in detail.events:
        move = f" {e.from_state}→{e.to_state}" if e.from_state else ""
        _out(f"    {e.at:%Y-%m-%d %H:%M}  {e.actor}: {e.kind}{move}  {e.comment or ''}".rstrip())
    return 0


def cmd_transition(args: argparse.Namespace) -> int:
    """Move a case along its lifecycle."""
    from .lifecycle import transition

    with _open(args) as db:
        case = transition(db, args.case, args.state, actor=args.actor, comment=args.comment)
    _out(f"case {case.id} is now {case.state}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Print the monthly per-county report (table or CSV)."""
    from .report import monthly_report

    with _open(args) as db, db.session() as session:
        report = monthly_report(session, args.month)
    if args.csv:
        text = report.to_csv()
    else:
        header = (
            "rank", "county", "issued", "verified", "on time", "violations", "rectified",
            "overdue", "relapses", "closed", "days",
        )  # fmt: skip
        row = "{:>4}  {:<20} {:>6} {:>8} {:>7} {:>10} {:>9} {:>7} {:>8} {:>6} {:>6}"
        lines = [row.format(*header)]
        for r in report.rows:
            share = "-" if r.on_time_share is None else f"{r.on_time_share:.0%}"
            days = "-" if r.median_days_to_verify is None else f"{r.median_days_to_verify:.1f}"
            lines.append(
                row.format(
                    r.rank or "-",
                    r.county[:20],
                    r.issued,
                    r.verified,
                    share,
                    r.violations,
                    r.rectified,
                    r.overdue,
                    r.relapses,
                    r.closed,
                    days,
                )  # fmt: skip
            )
        text = (
            f"report {report.month} (cases first detected that month)\n" + "\n".join(lines) + "\n"
        )
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        log.info("wrote %s", args.out)
    else:
        sys.stdout.write(text)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write matching cases as a GeoJSON FeatureCollection."""
    from ..io.atomic import atomic_path
    from .queries import cases_geojson

    with _open(args) as db, db.session() as session:
        collection = cases_geojson(session, _query(args), geometry=args.geometry)
    text = json.dumps(collection, ensure_ascii=False)
    if args.out == "-":
        _out(text)
    else:
        with atomic_path(Path(args.out)) as tmp:
            tmp.write_text(text, encoding="utf-8")
        _out(f"{len(collection['features'])} cases written to {args.out}")
    return 0


def cmd_sites_import(args: argparse.Namespace) -> int:
    """Import a permits / restoration registry."""
    from .sites import import_sites, read_sites

    records = read_sites(
        args.file,
        name_field=args.name_field,
        kind_field=args.kind_field,
        valid_from_field=args.valid_from_field,
        valid_to_field=args.valid_to_field,
        kind=args.kind,
    )
    with _open(args) as db:
        report = import_sites(db, records)
    _out(f"{args.file}: {report.summary()}")
    return 0


def cmd_sites_list(args: argparse.Namespace) -> int:
    """List the known sites."""
    from sqlalchemy import select

    from .models import KnownSite

    with _open(args) as db, db.session() as session:
        sites = session.scalars(select(KnownSite).order_by(KnownSite.kind, KnownSite.name)).all()
        for s in sites:
            valid = f"{s.valid_from or '…'}..{s.valid_to or '…'}"
            _out(f"{s.id:>4}  {s.kind:<11} {s.name[:40]:<40} {s.area_m2 / 10000:8.2f} ha  {valid}")
    return 0


def cmd_escalate(args: argparse.Namespace) -> int:
    """Flag overdue cases as escalated."""
    from .lifecycle import escalate_overdue

    with _open(args) as db:
        ids = escalate_overdue(db)
    _out(f"{len(ids)} cases escalated" + (f": {', '.join(map(str, ids))}" if ids else ""))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade (or downgrade) the database schema."""
    from .db import redact
    from .migrate import current_revision, downgrade, upgrade

    url = db_url_of(args)
    if args.downgrade:
        downgrade(url, args.downgrade)
    else:
        upgrade(url, args.revision)
    _out(f"{redact(url)} is at revision {current_revision(url) or 'base (empty)'}")
    return 0


# --- parser -----------------------------------------------------------------------------------


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        type=_csv_list,
        help=f"comma-separated states ({', '.join(CASE_STATES)})",
    )
    parser.add_argument("--county", type=_csv_list, help="comma-separated assigned counties")
    parser.add_argument("--type", type=_csv_list, help="comma-separated change types")
    parser.add_argument("--tier", type=_csv_list, help="comma-separated protection tiers")
    parser.add_argument("--tag", type=_csv_list, help=f"comma-separated tags ({', '.join(TAGS)})")
    parser.add_argument("--aoi", help="only cases of this AOI")
    parser.add_argument("--bbox", type=_bbox, help="WEST,SOUTH,EAST,NORTH (WGS84 degrees)")
    parser.add_argument("--since", type=iso_date, help="detected on or after YYYY-MM-DD")
    parser.add_argument("--until", type=iso_date, help="detected on or before YYYY-MM-DD")
    parser.add_argument("--escalated", action="store_true", help="only escalated cases")


def build_tracker_parser(
    parser: argparse.ArgumentParser, *, parents: Sequence[argparse.ArgumentParser] = ()
) -> None:
    """Add the tracker's subcommands to ``parser`` (the ``tracker`` command, or a root parser)."""
    # main() reads these; defaults keep it working when no common parent parser is passed
    parser.set_defaults(debug=False, verbose=False, quiet=False)
    db = argparse.ArgumentParser(add_help=False, parents=list(parents))
    where = db.add_mutually_exclusive_group()
    where.add_argument(
        "--db",
        metavar="URL",
        help=f"database URL (default: ${DB_ENV_VAR} or ${DB_FILE_ENV_VAR}, else {DEFAULT_DB_URL}); "
        "a URL with a password belongs in --db-file, never here",
    )
    where.add_argument(
        "--db-file",
        metavar="PATH",
        help="file holding the database URL, e.g. a Docker or Kubernetes secret "
        f"(default: ${DB_FILE_ENV_VAR})",
    )
    sub = parser.add_subparsers(dest="tracker_command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "ingest",
        parents=[db],
        help="ingest clues.geojson files into cases",
        description="Ingest clues.geojson files into cases. A clue the ledger cannot store "
        "(missing or mistyped property, text too long or with control characters, coordinates "
        "that are not WGS84 degrees, a polygon crossing the antimeridian unsplit, no area, a "
        "clue_id given twice with different content) is set aside with its reason in "
        "NAME.rejects.geojson beside the file, and the rest are stored. Exit status: 0 when "
        "every file had clues to store; 1 when a file's clues were all rejected, or with "
        "--strict any clue was; 2 on an error (unreadable file, database).",
    )
    p.add_argument("clues", nargs="+", help="clues.geojson file(s) written by a run")
    p.add_argument(
        "--rejects",
        metavar="PATH",
        help="write the rejected clues here (one clues file only; default: "
        "NAME.rejects.geojson beside it)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="store nothing if any clue is rejected (the rejects file is still written; "
        "exit status 1)",
    )
    p.add_argument(
        "--deadline-days",
        type=int,
        default=TrackerSettings.deadline_days,
        help="days from issue to the verification deadline of new cases (default: 30)",
    )
    p.add_argument(
        "--issue-probable",
        action="store_true",
        help="open cases for clues whose alert is still probable (default: hold them until a "
        "later run confirms them)",
    )
    p.add_argument("--actor", default="ingest", help="who ingests, for the case events")
    p.add_argument("--json", action="store_true", help="one JSON report per file")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("list", parents=[db], help="list cases, most pressing first")
    _add_filters(p)
    p.add_argument("--limit", type=int, default=50, help="page size (default: 50)")
    p.add_argument("--offset", type=int, default=0, help="skip this many cases")
    p.add_argument("--all", action="store_true", help="every matching case, no paging")
    p.add_argument("--json", action="store_true", help="one JSON object per case per line")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", parents=[db], help="one case with its detections and events")
    p.add_argument("case", type=int, help="case id")
    p.add_argument("--json", action="store_true", help="as one JSON object")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("transition", parents=[db], help="move a case to another state")
    p.add_argument("case", type=int, help="case id")
    p.add_argument("state", choices=CASE_STATES, help="the new state")
    p.add_argument("--actor", required=True, help="who decides (recorded)")
    p.add_argument("--comment", help="why (recorded)")
    p.set_defaults(func=cmd_transition)

    p = sub.add_parser("report", parents=[db], help="monthly per-county report")
    p.add_argument("--month", required=True, help="YYYY-MM")
    p.add_argument("--csv", action="store_true", help="CSV instead of a table")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", parents=[db], help="cases as GeoJSON for QGIS")
    _add_filters(p)
    p.add_argument("--out", required=True, help="output .geojson file ('-' for stdout)")
    p.add_argument(
        "--geometry",
        choices=("union", "latest", "first"),
        default="union",
        help="which footprint to export (default: union of all detections)",
    )
    p.set_defaults(func=cmd_export)

    sites = sub.add_parser("sites", help="permits and restoration sites")
    sites_sub = sites.add_subparsers(dest="sites_command", required=True, metavar="COMMAND")
    p = sites_sub.add_parser("import", parents=[db], help="import a registry (GeoJSON/GPKG)")
    p.add_argument("file", help="registry file with name, kind, valid_from, valid_to fields")
    p.add_argument("--kind", choices=("permit", "restoration"), help="kind for every feature")
    p.add_argument("--name-field", default="name", help="site-name field (default: name)")
    p.add_argument("--kind-field", default="kind", help="kind field (default: kind)")
    p.add_argument("--valid-from-field", default="valid_from", help="default: valid_from")
    p.add_argument("--valid-to-field", default="valid_to", help="default: valid_to")
    p.set_defaults(func=cmd_sites_import)
    p = sites_sub.add_parser("list", parents=[db], help="list the known sites")
    p.set_defaults(func=cmd_sites_list)

    p = sub.add_parser("escalate", parents=[db], help="flag overdue cases as escalated")
    p.set_defaults(func=cmd_escalate)

    p = sub.add_parser("migrate", parents=[db], help="create or upgrade the database schema")
    p.add_argument("--revision", default="head", help="target revision (default: head)")
    p.add_argument("--downgrade", metavar="REV", help="downgrade to REV instead ('base' drops all)")
    p.set_defaults(func=cmd_migrate)

    from .api.cli import add_api_commands

    add_api_commands(sub, db_parent=db)


def add_tracker_commands(
    subparsers: Any, *, parents: Sequence[argparse.ArgumentParser] = ()
) -> argparse.ArgumentParser:
    """Add ``tracker`` and its subcommands to the main CLI's subparsers.

    ``parents`` are handed to every subcommand (the main CLI's ``--debug/-q/-v`` parser).
    """
    tracker = subparsers.add_parser(
        "tracker",
        help="case ledger: ingest clues, follow cases to their verdict, report",
        description="The case ledger. Database: --db URL or --db-file PATH, else "
        f"$CHANGEDETECT_DB or $CHANGEDETECT_DB_FILE, else {DEFAULT_DB_URL}.",
    )
    build_tracker_parser(tracker, parents=parents)
    return tracker


def main(argv: Sequence[str] | None = None) -> int:
    """Run a tracker command alone (``python -m changedetect.tracker``)."""
    parser = argparse.ArgumentParser(
        prog="python -m changedetect.tracker", description="The changedetect case ledger."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    build_tracker_parser(parser, parents=[common])
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("changedetect")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    try:
        return int(args.func(args))
    except ChangeDetectError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"changedetect: error: {exc}\n")
        return 2
