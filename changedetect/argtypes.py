"""Command-line argument types shared by every command (changedetect, its tracker, the flow)."""

from __future__ import annotations

import argparse
import datetime as dt
import re


def iso_date(text: str) -> dt.date:
    """A calendar date YYYY-MM-DD; a well-formed date that does not exist says so."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise argparse.ArgumentTypeError(f"{text} does not exist ({exc})") from None
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None
