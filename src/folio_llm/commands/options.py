"""What every command shares: the --params and --schemas options, and one-line errors for bad input."""

from __future__ import annotations

import functools
import os
import sys

import click

from folio_llm import paths
from folio_llm.typed_config import ParamsError

PARAMS_OPTION = click.option(
    "--params", "params_path", default="params.yaml", show_default=True,
    type=click.Path(dir_okay=False), help="params.yaml to read (missing = embedded defaults).",
)

SCHEMAS_OPTION = click.option(
    "--schemas", default=paths.SCHEMAS, show_default=True, type=click.Path(),
    help="FOLIO schemas folder, for the Instance-schema check (with params.source.reference_data).",
)

# Errors that mean bad input or settings: one line, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ParamsError, OSError, ValueError)


def friendly_errors(command):
    """Turn bad-input exceptions into one line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as exc:
            if os.environ.get("FOLIO_LLM_DEBUG"):
                raise
            message = str(exc) or type(exc).__name__
            if isinstance(exc, OSError) and exc.filename:
                message = f"{exc.strerror}: {exc.filename}"
            click.echo(f"error: {message.splitlines()[0]}", err=True)
            sys.exit(1)

    return wrapper


def summarize(counts, source: str, rejects: str) -> None:
    """Print `N read, M written, K rejected`; fail when nothing could be used."""
    click.echo(counts.line())
    if counts.written == 0:
        raise ValueError(f"no usable records in {source} (reasons in {rejects})")
