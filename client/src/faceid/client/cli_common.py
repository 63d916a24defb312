"""What every `faceid` command shares: exit codes, --json output, and the session that turns errors into them.

Exit codes (see cli.py's docstring): 0 the call succeeded, 1 a server-side or transport problem, 2 the
request was at fault (FaceIdError.client_fault, an unreadable local file, bad flags).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from faceid.client.client import FaceIdClient
from faceid.client.connection import Connection
from faceid.client.errors import FaceIdError
from rich.console import Console

EXIT_SERVER = 1
EXIT_REQUEST = 2

Json = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def exit_code(exc: FaceIdError) -> int:
    """The documented exit code of a failed call: 2 when the request was at fault, else 1."""
    return EXIT_REQUEST if exc.client_fault else EXIT_SERVER


@contextmanager
def session(
    conn: Connection,
    as_json: bool,
    timeout: float,
    wait: float = 0.0,
    local_errors: tuple[type[OSError], ...] = (FileNotFoundError,),
) -> Iterator[FaceIdClient]:
    """A client for one command; failures become a message (or JSON) and the documented exit code.

    local_errors: errors of local files (a photo not found, a report that cannot be written) that exit 2.
    """
    try:
        with conn.client(timeout=timeout) as client:
            if wait > 0:
                client.wait_ready(wait)
            yield client
    except FaceIdError as exc:
        if as_json:
            print_json({"error": {"code": exc.code.name, "message": exc.message}})
        else:
            Console(stderr=True).print(f"[bold red]error[/] {exc.code.name}: {exc.message}", highlight=False)
        raise typer.Exit(exit_code(exc)) from None
    except local_errors as exc:
        Console(stderr=True).print(f"[bold red]error[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_REQUEST) from None
