"""Fuzz every RPC of a live cloud with messages generated from the proto's fields.

Each case is one call: a frame, an update or a tap request, valid with a few fields mutated,
cut short, or plain bytes, with the right, a wrong or no token. Asserted for each: a refusal
carries the right code (UNAUTHENTICATED for credentials, INVALID_ARGUMENT for bad input,
RESOURCE_EXHAUSTED only when the cloud trains as many models as it holds), never INTERNAL or
UNKNOWN; the server stays alive, and a good client streaming alongside is served throughout.
"""
import math
import threading
from collections import Counter

import grpc
import pytest

from hypothesis import HealthCheck, given, settings, strategies as st  # a dev dependency: never skipped

from cloud.server import CloudConfig, CloudServer  # noqa: E402
from splitleak.v1 import splitleak_pb2 as pb  # noqa: E402
from splitleak.wire.channel import auth_metadata, open_channel  # noqa: E402
from splitleak.wire.ids import STREAM_ID  # noqa: E402
from wire_helpers import INFER, SUBSCRIBE, TRAIN, frame, update  # noqa: E402

pytestmark = pytest.mark.slow  # hypothesis against a live server: seconds; the whole suite runs it

TOKEN, TAP_TOKEN = "edge-secret", "tap-secret"
LIMITS = dict(allow_models=("lenet", "cnn6"), max_classes=100, max_input_size=64)
CASES = 60  # per RPC
FUZZ = settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
INVALID, EXHAUSTED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
TALLY: Counter = Counter()


# ---- a live cloud, and a good client streaming beside the fuzzer ----

class GoodClient:
    """Streams valid frames on one call until stopped; every one must come back with a prediction."""

    def __init__(self, port: int):
        self.stop, self.answers, self.sent = threading.Event(), [], 0
        self.channel = open_channel(f"127.0.0.1:{port}")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _frames(self):
        while not self.stop.wait(0.02):
            self.sent += 1
            yield frame(self.sent, stream="good")

    def _run(self):
        rpc = self.channel.stream_stream(INFER, request_serializer=pb.FeatureFrame.SerializeToString,
                                         response_deserializer=pb.FrameResult.FromString)
        self.answers = list(rpc(self._frames(), metadata=auth_metadata(TOKEN), timeout=300))

    def close(self) -> list[pb.FrameResult]:
        self.stop.set()
        self.thread.join(30)
        self.channel.close()
        return self.answers


@pytest.fixture(scope="module")
def cloud():
    server = CloudServer(CloudConfig(token=TOKEN, tap_token=TAP_TOKEN, **LIMITS))
    good = GoodClient(server.port)
    yield server
    answers = good.close()
    server.stop(0)
    assert good.sent > 0 and len(answers) == good.sent, "the good client lost answers"
    assert all(a.HasField("prediction") for a in answers), "the good client was refused"
    print(f"\nfuzz: {dict(TALLY)}; good client: {len(answers)} frames, all answered")


# ---- strategies over the proto's fields ----

def texts(*specials: str, max_size: int = 80):
    return st.one_of(st.sampled_from(specials), st.text(max_size=max_size))


def ints(*specials: int, lo: int = -2**31, hi: int = 2**31 - 1):
    return st.one_of(st.sampled_from(specials), st.integers(lo, hi))


ANY_FLOAT = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, 3e38, 1e300, -1e-300, 0.0, 1.0]), st.floats())
META_FIELDS = {
    "stream_id": texts("s", "", "../x", "a\x00b", "a\nb", "x" * 65, "é"),
    "seq": ints(0, 1, 2**63 - 1, 2**63, 2**64 - 1, lo=0, hi=2**64 - 1),
    "capture_ts": ANY_FLOAT,
    "model_id": texts("lenet", "cnn6", "resnet18", "vit_b_16", "", "alexnet"),
    "split_point": texts("conv1", "conv2", "conv3", "none", "layer1", ""),
    "weights": st.one_of(texts("seed:0", "", "seed:-1", "seed:" + "9" * 25, "file:0123456789abcdef", "tv:IMAGENET1K_V1",
                               "tv:", "/etc/passwd", "seed:1e3"),
                         st.integers(0, 2**70).map(lambda n: f"seed:{n}")),
    "input_size": ints(32, 0, -1, 16, 64, 65, 1024, 2**31 - 1),
    "num_classes": ints(0, 10, 1, 100, 101, -1, 10**6, 2**31 - 1),
}
TENSOR_FIELDS = {
    "dtype": texts("float32", "float16", "int8", "uint8", "int64", "complex64", ""),
    "shape": st.lists(ints(1, 2, 8, 12, 0, -1, 2**40, lo=-2**63, hi=2**63 - 1), max_size=9),
    "data": st.binary(max_size=1024),
}
CODEC_FIELDS = {"name": texts("fp32", "fp16", "int8", "", "zip"), "scale": ANY_FLOAT,
                "zero_point": ints(0, -128, 127, 128, -129)}


def mutation(prefix: str, fields: dict):
    return st.one_of(*[strategy.map(lambda value, name=name: (f"{prefix}{name}", value))
                       for name, strategy in fields.items()])


def apply(message, mutations):
    for path, value in mutations:
        *parents, leaf = path.split(".")
        target = message
        for name in parents:
            target = getattr(target, name)
        if isinstance(value, list):
            getattr(target, leaf)[:] = value
        else:
            setattr(target, leaf, value)
    return message


def generated(good, mutations, *, parse_as):
    """A valid message with mutations applied, cut short, or arbitrary bytes."""
    mutated = st.lists(mutations, max_size=3).map(lambda ms: apply(parse_as.FromString(good), ms).SerializeToString())
    cut = st.integers(0, len(good) - 1).map(lambda n: good[:n])
    return st.one_of(mutated, mutated, mutated, cut, st.binary(max_size=256))


GOOD_FRAME = frame(0).SerializeToString()
GOOD_UPDATE = update(0).SerializeToString()
FRAMES = generated(GOOD_FRAME, st.one_of(mutation("meta.", META_FIELDS), mutation("features.", TENSOR_FIELDS),
                                         mutation("codec.", CODEC_FIELDS)), parse_as=pb.FeatureFrame)
LEARNING_FIELDS = {"mode": texts("fedsgd", "fedavg", "split", ""), "batch_size": ints(1, 0, 2, 1025, lo=0, hi=2**32 - 1),
                   "learning_rate": ANY_FLOAT, "round": ints(0, lo=0, hi=2**32 - 1),
                   "param_names": st.lists(texts("fc.weight", "conv1.weight", ""), max_size=4)}
UPDATES = generated(GOOD_UPDATE, st.one_of(mutation("meta.frame.", META_FIELDS), mutation("meta.", LEARNING_FIELDS),
                                           mutation("labels.", TENSOR_FIELDS)), parse_as=pb.ModelUpdate)
TAP_REQUESTS = st.one_of(
    st.builds(lambda ids, size: pb.TapRequest(stream_ids=ids, queue_size=size).SerializeToString(),
              st.lists(texts("good", "s", "../x", ""), max_size=70), ints(0, 1, 65536, 65537, lo=0, hi=2**32 - 1)),
    st.binary(max_size=64))
TOKENS = st.sampled_from(["right", "right", "right", "none", "wrong"])


# ---- one call per case ----

def one_call(port, method, payload, token, timeout=30.0):
    """(status code of the call, answers)."""
    channel = open_channel(f"127.0.0.1:{port}")
    response = {INFER: pb.FrameResult, TRAIN: pb.UpdateAck, SUBSCRIBE: pb.TapItem}[method]
    try:
        rpc = channel.stream_stream(method, request_serializer=lambda b: b, response_deserializer=response.FromString)
        answers = []
        try:
            for answer in rpc(iter([payload]), metadata=auth_metadata(token), timeout=timeout):
                answers.append(answer)
        except grpc.RpcError as err:
            return err.code(), answers
        return grpc.StatusCode.OK, answers
    finally:
        channel.close()


def check_answer(method, payload, token_choice, code, answers, allowed):
    if token_choice != "right":
        assert code == grpc.StatusCode.UNAUTHENTICATED and not answers
        TALLY[f"{method.rsplit('/', 1)[1]} unauthenticated"] += 1
        return
    assert code == grpc.StatusCode.OK and len(answers) == 1, (code, answers)
    answer = answers[0]
    if answer.HasField("error"):
        assert grpc.StatusCode(_status(answer.error.code)) in allowed, answer.error
        assert answer.error.message and "\n" not in answer.error.message
        TALLY[f"{method.rsplit('/', 1)[1]} {_status(answer.error.code)[1]}"] += 1
    else:
        TALLY[f"{method.rsplit('/', 1)[1]} accepted"] += 1


def _status(value: int):
    return next(code.value for code in grpc.StatusCode if code.value[0] == value)


def _meta(payload, method):
    message_type = pb.FeatureFrame if method == INFER else pb.ModelUpdate
    try:
        message = message_type.FromString(payload)
    except Exception:
        return None
    return message.meta if method == INFER else message.meta.frame


def _must_refuse(meta) -> bool:
    """Clear-cut cases the cloud must refuse as bad input, whatever else the message holds."""
    return (not STREAM_ID.fullmatch(meta.stream_id) or meta.seq > 2**63 - 1 or not math.isfinite(meta.capture_ts)
            or meta.model_id not in LIMITS["allow_models"] or meta.input_size > LIMITS["max_input_size"]
            or meta.num_classes > LIMITS["max_classes"] or meta.num_classes < 0)


@FUZZ
@given(payload=FRAMES, token=TOKENS)
def test_fuzz_infer(cloud, payload, token):
    _fuzz(cloud, INFER, payload, token, allowed={grpc.StatusCode.INVALID_ARGUMENT})


@FUZZ
@given(payload=UPDATES, token=TOKENS)
def test_fuzz_train(cloud, payload, token):
    _fuzz(cloud, TRAIN, payload, token, allowed={INVALID, EXHAUSTED})


def _fuzz(cloud, method, payload, token_choice, allowed):
    token = {"right": TOKEN, "wrong": TAP_TOKEN, "none": None}[token_choice]
    code, answers = one_call(cloud.port, method, payload, token)
    check_answer(method, payload, token_choice, code, answers, allowed)
    meta = _meta(payload, method)
    if token_choice == "right" and meta is not None and _must_refuse(meta):
        assert answers[0].error.code == INVALID.value[0], (meta, answers[0])


@FUZZ
@given(payload=TAP_REQUESTS, token_choice=TOKENS)
def test_fuzz_tap(cloud, payload, token_choice):
    token = {"right": TAP_TOKEN, "wrong": TOKEN, "none": None}[token_choice]
    code, _ = one_call(cloud.port, SUBSCRIBE, payload, token, timeout=0.3)
    if token_choice != "right":
        assert code == grpc.StatusCode.UNAUTHENTICATED
    else:  # a valid subscription runs until the client's deadline
        assert code in {grpc.StatusCode.DEADLINE_EXCEEDED, INVALID}, code
    TALLY[f"Subscribe {code.name.lower()}"] += 1


def test_the_cloud_still_serves_after_the_fuzz(cloud):
    code, answers = one_call(cloud.port, INFER, frame(1, stream="after").SerializeToString(), TOKEN)
    assert code == grpc.StatusCode.OK and answers[0].HasField("prediction")
