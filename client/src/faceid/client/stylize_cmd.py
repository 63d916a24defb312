"""`faceid stylize CONTENT STYLE... -o out.png`: neural style transfer on a faceid server, with a progress bar.

Register on the `faceid` app with `app.command("stylize")(stylize)`. Talks to faceid.v1.StyleTransfer with
grpcio and the generated stubs only. Exit codes as for every `faceid` command: 0 done, 1 server-side or
transport problem (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED: retry later, INTERNAL), 2 the request was
at fault (INVALID_ARGUMENT, FAILED_PRECONDITION, an unreadable file, bad flags).
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated

import grpc
import typer
from faceid.client.cli_common import exit_code
from faceid.client.client import DEFAULT_SERVER
from faceid.client.connection import ApiKeyOpt, ServerOpt, TlsCaOpt, TlsCertOpt, TlsKeyOpt, connect
from faceid.client.errors import from_rpc_error
from faceid.v1 import style_pb2 as pb
from faceid.v1 import style_pb2_grpc as pb_grpc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn



class Method(str, Enum):
    optimize = "optimize"
    fast = "fast"


class Init(str, Enum):
    content = "content"
    noise = "noise"
    noisy_content = "noisy-content"


class OptimizerName(str, Enum):
    lbfgs = "lbfgs"
    adam = "adam"


_METHODS = {Method.optimize: pb.STYLE_METHOD_OPTIMIZE, Method.fast: pb.STYLE_METHOD_FAST}
_INITS = {Init.content: pb.STYLE_INIT_CONTENT, Init.noise: pb.STYLE_INIT_NOISE, Init.noisy_content: pb.STYLE_INIT_NOISY_CONTENT}
_OPTIMIZERS = {OptimizerName.lbfgs: pb.STYLE_OPTIMIZER_LBFGS, OptimizerName.adam: pb.STYLE_OPTIMIZER_ADAM}

ImageArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="content photo")]
StylesArg = Annotated[
    list[Path], typer.Argument(exists=True, dir_okay=False, readable=True, help="style image(s); several are blended")
]


def build_request(
    content: Path,
    styles: list[Path],
    *,
    method: Method = Method.optimize,
    size: int = 0,
    steps: int = 0,
    style_weight: float | None = None,
    content_weight: float | None = None,
    tv_weight: float | None = None,
    blend: list[float] | None = None,
    strength: float | None = None,
    preserve_color: bool = False,
    init: Init = Init.content,
    optimizer: OptimizerName = OptimizerName.lbfgs,
    seed: int = 0,
) -> pb.StylizeRequest:
    """The StylizeRequest for these files and flags (reads the files)."""
    if blend and len(blend) != len(styles):
        raise typer.BadParameter(f"--blend was given {len(blend)} times for {len(styles)} style images")
    request = pb.StylizeRequest(
        content=content.read_bytes(),
        styles=[
            pb.StyleImage(image=path.read_bytes(), weight=blend[i] if blend else None) for i, path in enumerate(styles)
        ],
        method=_METHODS[method],
        size=size,
        steps=steps,
        init=_INITS[init],
        optimizer=_OPTIMIZERS[optimizer],
        seed=seed,
        preserve_color=preserve_color,
    )
    for name, value in (
        ("style_weight", style_weight),
        ("content_weight", content_weight),
        ("tv_weight", tv_weight),
        ("style_strength", strength),
    ):
        if value is not None:
            setattr(request, name, value)
    return request


def stylize(
    content: ImageArg,
    style: StylesArg,
    output: Annotated[Path, typer.Option("--output", "-o", dir_okay=False, help="where to write the PNG")],
    method: Annotated[Method, typer.Option(help="optimize: Gatys (slow, best); fast: one network pass")] = Method.optimize,
    size: Annotated[int, typer.Option(help="long side of the output in px (0 = server default: 256/512)")] = 0,
    steps: Annotated[int, typer.Option(help="optimize: optimiser steps (0 = server default, 200)")] = 0,
    style_weight: Annotated[float | None, typer.Option(help="optimize: beta (default 10)")] = None,
    content_weight: Annotated[float | None, typer.Option(help="optimize: alpha (default 1)")] = None,
    tv_weight: Annotated[float | None, typer.Option(help="optimize: total-variation weight (default 0)")] = None,
    blend: Annotated[list[float] | None, typer.Option(help="blend weight per style image, in order (repeat)")] = None,
    strength: Annotated[float | None, typer.Option(help="fast: style strength 0..1 (default 1)")] = None,
    preserve_color: Annotated[bool, typer.Option("--preserve-color", help="keep the content photo's colours")] = False,
    init: Annotated[Init, typer.Option(help="optimize: starting image")] = Init.content,
    optimizer: Annotated[OptimizerName, typer.Option(help="optimize: lbfgs or adam")] = OptimizerName.lbfgs,
    seed: Annotated[int, typer.Option(help="seed for noise initialisation")] = 0,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the result, queueing included")] = 1800.0,
) -> None:
    """Render CONTENT in the style of STYLE (several STYLE images are blended) and write a PNG."""
    err = Console(stderr=True)
    request = build_request(
        content,
        style,
        method=method,
        size=size,
        steps=steps,
        style_weight=style_weight,
        content_weight=content_weight,
        tv_weight=tv_weight,
        blend=blend,
        strength=strength,
        preserve_color=preserve_color,
        init=init,
        optimizer=optimizer,
        seed=seed,
    )
    conn = connect(server, api_key=api_key, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
    with conn.channel() as channel:
        try:
            result = run_with_progress(
                pb_grpc.StyleTransferStub(channel), request, timeout=timeout, console=err, metadata=conn.metadata
            )
        except grpc.RpcError as rpc_error:
            exc = from_rpc_error(rpc_error)
            hint = f" (retry in {exc.retry_after_s:g} s)" if getattr(exc, "retry_after_s", None) else ""
            err.print(f"[bold red]error[/] {exc.code.name}: {exc.message}{hint}", highlight=False)
            raise typer.Exit(exit_code(exc)) from None
    tmp = output.with_name(output.name + ".part")
    tmp.write_bytes(result.png)
    os.replace(tmp, output)  # never a half-written PNG at the requested path
    losses = f", style loss {result.losses.style:.4g}" if result.HasField("losses") else ""
    err.print(f"wrote {output} ({result.width}x{result.height}, {result.seconds:.1f} s{losses})", highlight=False)


def run_with_progress(
    stub: pb_grpc.StyleTransferStub,
    request: pb.StylizeRequest,
    *,
    timeout: float,
    console: Console,
    metadata: tuple[tuple[str, str], ...] = (),
) -> pb.StyleResult:
    """Call Stylize, show queue position and steps on a progress bar; returns the final result."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("connecting", total=None)
        for event in stub.Stylize(request, timeout=timeout, metadata=metadata):
            kind = event.WhichOneof("event")
            if kind == "queued":
                bar.update(task, description=f"queued ({event.queued.ahead} ahead)")
            elif kind == "started":
                bar.update(task, description="stylizing")
            elif kind == "progress":
                p = event.progress
                bar.update(
                    task,
                    total=p.total,
                    completed=p.step,
                    description=f"scale {p.scale}/{p.scales} style {p.losses.style:.3g} content {p.losses.content:.3g}",
                )
            elif kind == "result":
                return event.result
    raise RuntimeError("the server ended the Stylize stream without a result")  # a contract violation
