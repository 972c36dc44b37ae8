"""rpc/decode.py: a request whose strings are not valid UTF-8 is named field by field (it was
UNKNOWN "DecodeError"). Wire bytes are made by hand, as a hostile client would. No network."""

import pytest
from google.protobuf.message import DecodeError

from quartz_cluster.proto.quartz.v1 import node_pb2, quartz_pb2, quartz_pb2_grpc
from quartz_cluster.rpc import decode

BAD = b"\xff\xfe"


def swap(message, good: bytes) -> bytes:
    """The message's wire bytes with the placeholder `good` (same length) replaced by BAD."""
    data = message.SerializeToString()
    assert data.count(good) == 1 and len(good) == len(BAD)
    return data.replace(good, BAD)


@pytest.mark.parametrize(
    ("message", "path"),
    [
        (quartz_pb2.DeleteRequest(collection="c", ids=["a", "b", "QQ"]), "ids[2]"),
        (quartz_pb2.SearchPointsRequest(collection="c", filter="QQ"), "filter"),
        (quartz_pb2.DropCollectionRequest(name="QQ"), "name"),
        (
            quartz_pb2.UpsertRequest(collection="c", points=node_pb2.PointBatch(ids=["x", "QQ"])),
            "points.ids[1]",
        ),
        (
            quartz_pb2.CreateCollectionRequest(config=quartz_pb2.CollectionConfig(name="QQ", dim=3)),
            "config.name",
        ),
    ],
)
def test_the_first_invalid_utf8_string_is_named(message, path):
    data = swap(message, b"QQ")
    with pytest.raises(DecodeError):
        type(message).FromString(data)  # what protobuf alone says
    parsed = decode.parser(type(message))(data)
    assert parsed == decode.Undecodable(f"{path}: not valid UTF-8")


def test_valid_bytes_parse_as_usual_and_bytes_fields_may_hold_anything():
    msg = quartz_pb2.UpsertRequest(
        collection="c", points=node_pb2.PointBatch(ids=["é"], vectors=node_pb2.Vectors(data=BAD, count=1))
    )
    assert decode.parser(quartz_pb2.UpsertRequest)(msg.SerializeToString()) == msg
    assert decode.bad_field(quartz_pb2.UpsertRequest.DESCRIPTOR, msg.SerializeToString()) is None


def test_bytes_that_are_no_message_at_all_name_the_message_type():
    parsed = decode.parser(quartz_pb2.SearchPointsRequest)(b"\x0a\xff")  # length runs past the end
    assert parsed == decode.Undecodable("request: not a valid quartz.v1.SearchPointsRequest message")
    assert decode.bad_field(quartz_pb2.SearchPointsRequest.DESCRIPTOR, b"\x0f") is None  # wire type 7


def test_register_wraps_every_unary_parser_and_keeps_the_service():
    class Server:
        def __init__(self):
            self.generic, self.registered = [], {}

        def add_generic_rpc_handlers(self, handlers):
            self.generic.extend(handlers)

        def add_registered_method_handlers(self, service, handlers):
            self.registered[service] = handlers

    server = Server()
    decode.register(server, quartz_pb2_grpc.add_QuartzServicer_to_server, quartz_pb2_grpc.QuartzServicer())
    handlers = server.registered["quartz.v1.Quartz"]
    assert set(handlers) == {m.name for m in quartz_pb2.DESCRIPTOR.services_by_name["Quartz"].methods}
    data = swap(quartz_pb2.DeleteRequest(collection="QQ"), b"QQ")
    assert handlers["Delete"].request_deserializer(data) == decode.Undecodable("collection: not valid UTF-8")
    assert len(server.generic) == 1
