"""faceid.v1 style messages <-> style engine dataclasses (no logic beyond defaults and enum names)."""

from __future__ import annotations

from faceid.indexer.errors import InvalidRequest
from faceid.server.style import gatys
from faceid.server.style.engine import Method, StyleOutput, StyleProgress, StyleRequest
from faceid.server.style.jobs import Queued, Started
from faceid.v1 import style_pb2 as pb

_METHODS: dict[int, Method] = {
    pb.STYLE_METHOD_UNSPECIFIED: "optimize",
    pb.STYLE_METHOD_OPTIMIZE: "optimize",
    pb.STYLE_METHOD_FAST: "fast",
}
_METHOD_ENUM: dict[str, int] = {"optimize": pb.STYLE_METHOD_OPTIMIZE, "fast": pb.STYLE_METHOD_FAST}
_INITS: dict[int, gatys.Init] = {
    pb.STYLE_INIT_UNSPECIFIED: "content",
    pb.STYLE_INIT_CONTENT: "content",
    pb.STYLE_INIT_NOISE: "noise",
    pb.STYLE_INIT_NOISY_CONTENT: "noisy-content",
}
_OPTIMIZERS: dict[int, gatys.Optimizer] = {
    pb.STYLE_OPTIMIZER_UNSPECIFIED: "lbfgs",
    pb.STYLE_OPTIMIZER_LBFGS: "lbfgs",
    pb.STYLE_OPTIMIZER_ADAM: "adam",
}


def _enum(table: dict[int, str], value: int, field: str) -> str:
    try:
        return table[value]
    except KeyError:
        raise InvalidRequest(f"{field} has unknown value {value}") from None


def request_from_proto(msg: pb.StylizeRequest) -> StyleRequest:
    """StylizeRequest -> StyleRequest; raises InvalidRequest for values the engine cannot even represent."""
    defaults = gatys.GatysOptions()
    options = gatys.GatysOptions(
        content_weight=msg.content_weight if msg.HasField("content_weight") else defaults.content_weight,
        style_weight=msg.style_weight if msg.HasField("style_weight") else defaults.style_weight,
        tv_weight=msg.tv_weight if msg.HasField("tv_weight") else defaults.tv_weight,
        layer_weights=dict(msg.style_layer_weights) or dict(defaults.layer_weights),
        init=_enum(_INITS, msg.init, "init"),  # type: ignore[arg-type]
        optimizer=_enum(_OPTIMIZERS, msg.optimizer, "optimizer"),  # type: ignore[arg-type]
        learning_rate=msg.learning_rate if msg.HasField("learning_rate") else None,
        scales=msg.scales,
        seed=msg.seed,
        preview_every=msg.preview_every,
    )
    return StyleRequest(
        content=msg.content,
        styles=[(s.image, s.weight if s.HasField("weight") and s.weight != 0 else 1.0) for s in msg.styles],
        method=_enum(_METHODS, msg.method, "method"),  # type: ignore[arg-type]
        size=msg.size,
        steps=msg.steps,
        gatys=options,
        strength=msg.style_strength if msg.HasField("style_strength") else 1.0,
        preserve_color=msg.preserve_color,
        preview_size=msg.preview_size,
    )


def losses_to_proto(losses: gatys.Losses) -> pb.StyleLosses:
    return pb.StyleLosses(total=losses.total, content=losses.content, style=losses.style, tv=losses.tv)


def event_to_proto(event: object) -> pb.StylizeEvent | None:
    """A job event -> StylizeEvent (None for events the client does not see)."""
    if isinstance(event, Queued):
        return pb.StylizeEvent(queued=pb.StyleQueued(ahead=event.ahead))
    if isinstance(event, Started):
        return pb.StylizeEvent(started=pb.StyleStarted())
    if isinstance(event, StyleProgress):
        return pb.StylizeEvent(
            progress=pb.StyleProgress(
                step=event.step,
                total=event.total,
                scale=event.scale,
                scales=event.scales,
                losses=losses_to_proto(event.losses),
                preview_png=event.preview_png or b"",
            )
        )
    if isinstance(event, StyleOutput):
        result = pb.StyleResult(
            png=event.png,
            width=event.width,
            height=event.height,
            method=_METHOD_ENUM[event.method],  # type: ignore[arg-type]
            steps=event.steps,
            seconds=event.seconds,
        )
        if event.losses is not None:
            result.losses.CopyFrom(losses_to_proto(event.losses))
        return pb.StylizeEvent(result=result)
    return None
