"""rpc/: the one table from domain errors to gRPC statuses, the decorator that applies it, the
way back on the client side, and the message options of servers and channels. No network."""

import asyncio
import re

import grpc
import pytest

from quartz_cluster import errors, limits
from quartz_cluster.rpc import channels, server
from quartz_cluster.rpc.decode import Undecodable
from quartz_cluster.rpc.status import STATUS, STATUS_MESSAGE_CHARS_MAX, error_from_rpc, rpc, status_of

EXPECTED = {
    errors.InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, 400),
    errors.NotFound: (grpc.StatusCode.NOT_FOUND, 404),
    errors.AlreadyExists: (grpc.StatusCode.ALREADY_EXISTS, 409),
    errors.FailedPrecondition: (grpc.StatusCode.FAILED_PRECONDITION, 412),
    errors.ResourceExhausted: (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    errors.Unavailable: (grpc.StatusCode.UNAVAILABLE, 503),
    errors.Unauthenticated: (grpc.StatusCode.UNAUTHENTICATED, 401),
    errors.PermissionDenied: (grpc.StatusCode.PERMISSION_DENIED, 403),
    errors.Internal: (grpc.StatusCode.INTERNAL, 500),
    errors.QuotaExceeded: (grpc.StatusCode.RESOURCE_EXHAUSTED, 403),  # waiting does not help: 403
}


def test_the_table_covers_every_domain_error_exactly():
    assert STATUS == EXPECTED
    direct = set(errors.QuartzError.__subclasses__())
    assert set(STATUS) == direct | {errors.QuotaExceeded}
    assert errors.QuotaExceeded.__base__ is errors.ResourceExhausted
    for cls, (code, _) in STATUS.items():
        assert cls.code == code.name  # the error's canonical name is its gRPC code's


@pytest.mark.parametrize("cls", list(EXPECTED))
def test_status_of_each_domain_error(cls):
    assert status_of(cls("boom", "field")) == EXPECTED[cls]


def test_status_of_a_subclass_is_its_parents_and_of_the_base_internal():
    class TooLong(errors.InvalidArgument):
        pass

    assert status_of(TooLong("x")) == (grpc.StatusCode.INVALID_ARGUMENT, 400)
    assert status_of(errors.QuartzError("x")) == (grpc.StatusCode.INTERNAL, 500)


class FakeContext:
    """The part of grpc.aio.ServicerContext the decorator uses: abort raises, as gRPC's does."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code, details):
        self.aborted = (code, details)
        raise grpc.aio.AbortError()


class Service:
    def __init__(self, exc: BaseException | None = None, result=None) -> None:
        self.exc, self.result = exc, result

    @rpc
    async def Call(self, request, context):
        if self.exc is not None:
            raise self.exc
        return self.result


def call(service: Service, request="req") -> FakeContext:
    context = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(service.Call(request, context))
    return context


@pytest.mark.parametrize("cls", list(EXPECTED))
def test_a_domain_error_aborts_with_its_code_and_a_message_naming_the_field(cls):
    context = call(Service(cls("longer than 256 bytes", "upserts.ids[3]")))
    assert context.aborted == (EXPECTED[cls][0], "upserts.ids[3]: longer than 256 bytes")


def test_an_unexpected_exception_is_internal_with_an_error_id_and_no_internal_text(caplog):
    with caplog.at_level("ERROR", logger="quartz.rpc"):
        context = call(Service(KeyError("/var/lib/quartz/secret-shard")))
    code, details = context.aborted
    assert code == grpc.StatusCode.INTERNAL and "secret" not in details and "KeyError" not in details
    found = re.fullmatch(r"internal error \(error id ([0-9a-f]{12}); see the server log\)", details)
    assert found is not None
    (record,) = caplog.records
    assert record.error_id == found.group(1) and record.method == "Call"
    assert isinstance(record.exc_info[1], KeyError)  # the log keeps what the caller does not see
    other = call(Service(KeyError("x"))).aborted[1]
    assert other != details  # one id per error


def test_a_long_message_is_cut_to_fit_in_a_status():
    # a 10 KB message in the trailing metadata turned the answer into RESOURCE_EXHAUSTED
    context = call(Service(errors.InvalidArgument("x" * 10_000, "name")))
    code, details = context.aborted
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(details) <= STATUS_MESSAGE_CHARS_MAX and details.startswith("name: xxx")
    assert details.endswith("(10006 chars)")
    exact = "y" * STATUS_MESSAGE_CHARS_MAX
    assert call(Service(errors.NotFound(exact))).aborted[1] == exact  # at the limit: whole


def test_echo_cuts_long_values_and_keeps_short_ones_whole():
    assert errors.echo("docs") == "'docs'"
    assert errors.echo("a" * (errors.ECHO_CHARS_MAX - 2)) == repr("a" * (errors.ECHO_CHARS_MAX - 2))
    long = errors.echo("b" * 10_000)
    assert len(long) < errors.ECHO_CHARS_MAX + 20 and long.endswith("(10002 chars)")
    assert long.startswith("'bbb")


def test_an_undecodable_request_is_invalid_argument_with_its_message():
    context = call(Service(result="never"), request=Undecodable("ids[2]: not valid UTF-8"))
    assert context.aborted == (grpc.StatusCode.INVALID_ARGUMENT, "ids[2]: not valid UTF-8")


def test_an_abort_of_the_method_itself_passes_through():
    context = FakeContext()

    class Aborting:
        @rpc
        async def Call(self, request, ctx):
            await ctx.abort(grpc.StatusCode.OUT_OF_RANGE, "mine")

    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(Aborting().Call("req", context))
    assert context.aborted == (grpc.StatusCode.OUT_OF_RANGE, "mine")  # not re-aborted as INTERNAL


def test_a_result_is_returned_untouched_and_the_method_keeps_its_name():
    assert asyncio.run(Service(result={"ok": 1}).Call("req", FakeContext())) == {"ok": 1}
    assert Service.Call.__name__ == "Call"


class FakeRpcError(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


@pytest.mark.parametrize("cls", [c for c in EXPECTED if c is not errors.QuotaExceeded])
def test_error_from_rpc_gives_back_the_domain_error_with_its_message(cls):
    err = error_from_rpc(FakeRpcError(EXPECTED[cls][0], "ids[0]: must be a non-empty string"), "shard 2: ")
    assert type(err) is cls
    assert str(err) == "shard 2: ids[0]: must be a non-empty string"


def test_the_round_trip_keeps_the_class_and_the_message():
    for cls in EXPECTED:
        if cls is errors.QuotaExceeded:
            continue
        context = call(Service(cls("bad", "k")))
        err = error_from_rpc(FakeRpcError(*context.aborted))
        assert type(err) is cls and str(err) == "k: bad"


def test_a_quota_refusal_comes_back_as_one_and_a_rate_limit_does_not():
    quota = error_from_rpc(
        FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota calls_per_day of t: 100 of 100")
    )
    assert type(quota) is errors.QuotaExceeded and status_of(quota)[1] == 403
    rate = error_from_rpc(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit of key k: read 1/s"))
    assert type(rate) is errors.ResourceExhausted and status_of(rate)[1] == 429


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.Unavailable),  # transient: worth a retry elsewhere
        (grpc.StatusCode.CANCELLED, errors.Unavailable),
        (grpc.StatusCode.UNKNOWN, errors.Internal),
        (grpc.StatusCode.OUT_OF_RANGE, errors.Internal),
        (grpc.StatusCode.DATA_LOSS, errors.Internal),
    ],
)
def test_codes_outside_the_table_are_named_in_the_message(code, cls):
    err = error_from_rpc(FakeRpcError(code, "slow"), "n1: ")
    assert type(err) is cls
    assert str(err) == f"n1: {code.name}: slow"


def test_an_rpc_error_without_a_status_is_internal():
    err = error_from_rpc(grpc.RpcError("no status"))
    assert type(err) is errors.Internal and str(err) == "UNKNOWN: no status"


def test_servers_and_channels_carry_the_message_limit_both_ways():
    both = [
        ("grpc.max_receive_message_length", limits.MESSAGE_BYTES_MAX),
        ("grpc.max_send_message_length", limits.MESSAGE_BYTES_MAX),
    ]
    assert both == server.CHANNEL_OPTIONS
    assert [*both, ("grpc.so_reuseport", 0)] == server.SERVER_OPTIONS  # two servers never share a port


def test_node_channels_reuse_one_channel_per_address_with_the_options(monkeypatch):
    made = []

    class FakeChannel:
        def __init__(self, address, options):
            self.address, self.options, self.closed = address, options, False
            made.append(self)

        def unary_unary(self, *a, **kw):
            return object()

        unary_stream = stream_unary = stream_stream = unary_unary

        async def close(self):
            self.closed = True

    monkeypatch.setattr(channels.grpc.aio, "insecure_channel", lambda a, options: FakeChannel(a, options))
    pool = channels.NodeChannels()
    first = pool.stub("127.0.0.1:1")
    assert pool.stub("127.0.0.1:1") is first
    other = pool.stub("127.0.0.1:2")
    assert other is not first
    assert [(c.address, c.options) for c in made] == [
        ("127.0.0.1:1", server.CHANNEL_OPTIONS),
        ("127.0.0.1:2", server.CHANNEL_OPTIONS),
    ]
    asyncio.run(pool.close())
    assert all(c.closed for c in made)


def test_set_serving_marks_every_service_and_the_server():
    class Health:
        def __init__(self):
            self.status = {}

        async def set(self, name, status):
            self.status[name] = status

    from grpc_health.v1 import health_pb2

    h = Health()
    asyncio.run(server.set_serving(h, ["a.A", "b.B"], True))
    assert h.status == dict.fromkeys(["", "a.A", "b.B"], health_pb2.HealthCheckResponse.SERVING)
    asyncio.run(server.set_serving(h, ["a.A", "b.B"], False))
    assert h.status == dict.fromkeys(["", "a.A", "b.B"], health_pb2.HealthCheckResponse.NOT_SERVING)
