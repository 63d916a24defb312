from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StyleMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STYLE_METHOD_UNSPECIFIED: _ClassVar[StyleMethod]
    STYLE_METHOD_OPTIMIZE: _ClassVar[StyleMethod]
    STYLE_METHOD_FAST: _ClassVar[StyleMethod]

class StyleInit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STYLE_INIT_UNSPECIFIED: _ClassVar[StyleInit]
    STYLE_INIT_CONTENT: _ClassVar[StyleInit]
    STYLE_INIT_NOISE: _ClassVar[StyleInit]
    STYLE_INIT_NOISY_CONTENT: _ClassVar[StyleInit]

class StyleOptimizer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STYLE_OPTIMIZER_UNSPECIFIED: _ClassVar[StyleOptimizer]
    STYLE_OPTIMIZER_LBFGS: _ClassVar[StyleOptimizer]
    STYLE_OPTIMIZER_ADAM: _ClassVar[StyleOptimizer]
STYLE_METHOD_UNSPECIFIED: StyleMethod
STYLE_METHOD_OPTIMIZE: StyleMethod
STYLE_METHOD_FAST: StyleMethod
STYLE_INIT_UNSPECIFIED: StyleInit
STYLE_INIT_CONTENT: StyleInit
STYLE_INIT_NOISE: StyleInit
STYLE_INIT_NOISY_CONTENT: StyleInit
STYLE_OPTIMIZER_UNSPECIFIED: StyleOptimizer
STYLE_OPTIMIZER_LBFGS: StyleOptimizer
STYLE_OPTIMIZER_ADAM: StyleOptimizer

class StyleImage(_message.Message):
    __slots__ = ("image", "weight")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    weight: float
    def __init__(self, image: _Optional[bytes] = ..., weight: _Optional[float] = ...) -> None: ...

class StylizeRequest(_message.Message):
    __slots__ = ("content", "styles", "method", "size", "steps", "content_weight", "style_weight", "tv_weight", "style_layer_weights", "init", "optimizer", "learning_rate", "scales", "seed", "style_strength", "preserve_color", "preview_every", "preview_size")
    class StyleLayerWeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    STYLES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STYLE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TV_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STYLE_LAYER_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    INIT_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STYLE_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    PRESERVE_COLOR_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_EVERY_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    content: bytes
    styles: _containers.RepeatedCompositeFieldContainer[StyleImage]
    method: StyleMethod
    size: int
    steps: int
    content_weight: float
    style_weight: float
    tv_weight: float
    style_layer_weights: _containers.ScalarMap[str, float]
    init: StyleInit
    optimizer: StyleOptimizer
    learning_rate: float
    scales: int
    seed: int
    style_strength: float
    preserve_color: bool
    preview_every: int
    preview_size: int
    def __init__(self, content: _Optional[bytes] = ..., styles: _Optional[_Iterable[_Union[StyleImage, _Mapping]]] = ..., method: _Optional[_Union[StyleMethod, str]] = ..., size: _Optional[int] = ..., steps: _Optional[int] = ..., content_weight: _Optional[float] = ..., style_weight: _Optional[float] = ..., tv_weight: _Optional[float] = ..., style_layer_weights: _Optional[_Mapping[str, float]] = ..., init: _Optional[_Union[StyleInit, str]] = ..., optimizer: _Optional[_Union[StyleOptimizer, str]] = ..., learning_rate: _Optional[float] = ..., scales: _Optional[int] = ..., seed: _Optional[int] = ..., style_strength: _Optional[float] = ..., preserve_color: _Optional[bool] = ..., preview_every: _Optional[int] = ..., preview_size: _Optional[int] = ...) -> None: ...

class StyleLosses(_message.Message):
    __slots__ = ("total", "content", "style", "tv")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    TV_FIELD_NUMBER: _ClassVar[int]
    total: float
    content: float
    style: float
    tv: float
    def __init__(self, total: _Optional[float] = ..., content: _Optional[float] = ..., style: _Optional[float] = ..., tv: _Optional[float] = ...) -> None: ...

class StyleQueued(_message.Message):
    __slots__ = ("ahead",)
    AHEAD_FIELD_NUMBER: _ClassVar[int]
    ahead: int
    def __init__(self, ahead: _Optional[int] = ...) -> None: ...

class StyleStarted(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StyleProgress(_message.Message):
    __slots__ = ("step", "total", "scale", "scales", "losses", "preview_png")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_PNG_FIELD_NUMBER: _ClassVar[int]
    step: int
    total: int
    scale: int
    scales: int
    losses: StyleLosses
    preview_png: bytes
    def __init__(self, step: _Optional[int] = ..., total: _Optional[int] = ..., scale: _Optional[int] = ..., scales: _Optional[int] = ..., losses: _Optional[_Union[StyleLosses, _Mapping]] = ..., preview_png: _Optional[bytes] = ...) -> None: ...

class StyleResult(_message.Message):
    __slots__ = ("png", "width", "height", "method", "steps", "losses", "seconds")
    PNG_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    png: bytes
    width: int
    height: int
    method: StyleMethod
    steps: int
    losses: StyleLosses
    seconds: float
    def __init__(self, png: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., method: _Optional[_Union[StyleMethod, str]] = ..., steps: _Optional[int] = ..., losses: _Optional[_Union[StyleLosses, _Mapping]] = ..., seconds: _Optional[float] = ...) -> None: ...

class StylizeEvent(_message.Message):
    __slots__ = ("queued", "started", "progress", "result")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    queued: StyleQueued
    started: StyleStarted
    progress: StyleProgress
    result: StyleResult
    def __init__(self, queued: _Optional[_Union[StyleQueued, _Mapping]] = ..., started: _Optional[_Union[StyleStarted, _Mapping]] = ..., progress: _Optional[_Union[StyleProgress, _Mapping]] = ..., result: _Optional[_Union[StyleResult, _Mapping]] = ...) -> None: ...
