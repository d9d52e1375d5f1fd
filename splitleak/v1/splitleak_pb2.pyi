from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Codec(_message.Message):
    __slots__ = ("name", "scale", "zero_point")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ZERO_POINT_FIELD_NUMBER: _ClassVar[int]
    name: str
    scale: float
    zero_point: int
    def __init__(self, name: _Optional[str] = ..., scale: _Optional[float] = ..., zero_point: _Optional[int] = ...) -> None: ...

class FrameMeta(_message.Message):
    __slots__ = ("stream_id", "seq", "capture_ts", "model_id", "split_point", "weights", "input_size", "num_classes", "classifier")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINT_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    seq: int
    capture_ts: float
    model_id: str
    split_point: str
    weights: str
    input_size: int
    num_classes: int
    classifier: str
    def __init__(self, stream_id: _Optional[str] = ..., seq: _Optional[int] = ..., capture_ts: _Optional[float] = ..., model_id: _Optional[str] = ..., split_point: _Optional[str] = ..., weights: _Optional[str] = ..., input_size: _Optional[int] = ..., num_classes: _Optional[int] = ..., classifier: _Optional[str] = ...) -> None: ...

class FeatureFrame(_message.Message):
    __slots__ = ("meta", "codec", "features")
    META_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    meta: FrameMeta
    codec: Codec
    features: Tensor
    def __init__(self, meta: _Optional[_Union[FrameMeta, _Mapping]] = ..., codec: _Optional[_Union[Codec, _Mapping]] = ..., features: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("classes", "scores")
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    classes: _containers.RepeatedScalarFieldContainer[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, classes: _Optional[_Iterable[int]] = ..., scores: _Optional[_Iterable[float]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class FrameResult(_message.Message):
    __slots__ = ("stream_id", "seq", "cloud_ts", "prediction", "error")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CLOUD_TS_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    seq: int
    cloud_ts: float
    prediction: Prediction
    error: Error
    def __init__(self, stream_id: _Optional[str] = ..., seq: _Optional[int] = ..., cloud_ts: _Optional[float] = ..., prediction: _Optional[_Union[Prediction, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class NamedTensor(_message.Message):
    __slots__ = ("name", "tensor", "codec")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    name: str
    tensor: Tensor
    codec: Codec
    def __init__(self, name: _Optional[str] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., codec: _Optional[_Union[Codec, _Mapping]] = ...) -> None: ...

class LearningMeta(_message.Message):
    __slots__ = ("frame", "mode", "round", "batch_size", "learning_rate", "local_steps", "param_names")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    PARAM_NAMES_FIELD_NUMBER: _ClassVar[int]
    frame: FrameMeta
    mode: str
    round: int
    batch_size: int
    learning_rate: float
    local_steps: int
    param_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, frame: _Optional[_Union[FrameMeta, _Mapping]] = ..., mode: _Optional[str] = ..., round: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rate: _Optional[float] = ..., local_steps: _Optional[int] = ..., param_names: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelUpdate(_message.Message):
    __slots__ = ("meta", "codec", "tensors", "labels")
    META_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    meta: LearningMeta
    codec: Codec
    tensors: _containers.RepeatedCompositeFieldContainer[NamedTensor]
    labels: Tensor
    def __init__(self, meta: _Optional[_Union[LearningMeta, _Mapping]] = ..., codec: _Optional[_Union[Codec, _Mapping]] = ..., tensors: _Optional[_Iterable[_Union[NamedTensor, _Mapping]]] = ..., labels: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class UpdateAck(_message.Message):
    __slots__ = ("stream_id", "seq", "round", "state", "error")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    seq: int
    round: int
    state: ModelState
    error: Error
    def __init__(self, stream_id: _Optional[str] = ..., seq: _Optional[int] = ..., round: _Optional[int] = ..., state: _Optional[_Union[ModelState, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class ModelState(_message.Message):
    __slots__ = ("round", "tensors", "model")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    round: int
    tensors: _containers.RepeatedCompositeFieldContainer[NamedTensor]
    model: FrameMeta
    def __init__(self, round: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[NamedTensor, _Mapping]]] = ..., model: _Optional[_Union[FrameMeta, _Mapping]] = ...) -> None: ...

class TapRequest(_message.Message):
    __slots__ = ("stream_ids", "queue_size")
    STREAM_IDS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    stream_ids: _containers.RepeatedScalarFieldContainer[str]
    queue_size: int
    def __init__(self, stream_ids: _Optional[_Iterable[str]] = ..., queue_size: _Optional[int] = ...) -> None: ...

class TapItem(_message.Message):
    __slots__ = ("frame", "update", "state", "dropped", "recorder_error")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    RECORDER_ERROR_FIELD_NUMBER: _ClassVar[int]
    frame: FeatureFrame
    update: ModelUpdate
    state: ModelState
    dropped: int
    recorder_error: str
    def __init__(self, frame: _Optional[_Union[FeatureFrame, _Mapping]] = ..., update: _Optional[_Union[ModelUpdate, _Mapping]] = ..., state: _Optional[_Union[ModelState, _Mapping]] = ..., dropped: _Optional[int] = ..., recorder_error: _Optional[str] = ...) -> None: ...
