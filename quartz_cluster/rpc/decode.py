"""Requests that do not parse get INVALID_ARGUMENT naming the field, not UNKNOWN "DecodeError".

gRPC parses a request before any handler runs; protobuf refuses a `string` field that is not
valid UTF-8 with a bare DecodeError, which the gRPC server turns into UNKNOWN. `register` wraps
each method's request parser: a request that does not parse becomes an `Undecodable` carrying a
message that names the first bad field (found by walking the wire bytes against the message's
descriptor), and `rpc.status.rpc` answers it with INVALID_ARGUMENT."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

FIELD_DEPTH_MAX = 32  # nesting walked to find a bad field (protobuf's own limit is 100)


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Stands in for a request that did not parse; `message` names the field."""

    message: str


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def bad_field(descriptor: Descriptor, data: bytes, prefix: str = "", depth: int = 0) -> str | None:
    """The path of the first string field in `data` that is not valid UTF-8 ("ids[3]",
    "points.ids[0]"), None when there is none (or the bytes are malformed in another way)."""
    if depth > FIELD_DEPTH_MAX:
        return None
    counts: dict[int, int] = {}
    at = 0
    try:
        while at < len(data):
            key, at = _varint(data, at)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, at = _varint(data, at)
                continue
            if wire == 1:
                at += 8
                continue
            if wire == 5:
                at += 4
                continue
            if wire != 2:
                return None
            size, at = _varint(data, at)
            value, at = data[at : at + size], at + size
            fd = descriptor.fields_by_number.get(number)
            if fd is None:
                continue
            index = counts.get(number, 0)
            counts[number] = index + 1
            path = prefix + fd.name + (f"[{index}]" if fd.is_repeated else "")
            if fd.type == FieldDescriptor.TYPE_STRING:
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    return path
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                found = bad_field(fd.message_type, value, path + ".", depth + 1)
                if found is not None:
                    return found
    except ValueError:
        return None
    return None


def parser(message_class) -> Callable[[bytes], object]:
    """message_class.FromString, except that bytes that do not parse give an Undecodable."""

    def parse(data: bytes):
        try:
            return message_class.FromString(data)
        except DecodeError:
            path = bad_field(message_class.DESCRIPTOR, data)
            if path is not None:
                return Undecodable(f"{path}: not valid UTF-8")
            return Undecodable(f"request: not a valid {message_class.DESCRIPTOR.full_name} message")

    return parse


class _Collector:
    """Stands in for the server while a generated add_*_to_server registers its handlers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.service, self.handlers = service, handlers


def register(server: grpc.aio.Server, add_to_server, servicer) -> None:
    """`add_to_server(servicer, server)` (a generated add_*Servicer_to_server), with every unary
    request parsed by `parser` (stream requests keep the generated parser) and every method
    measured and traced (rpc/observe.py)."""
    from quartz_cluster.rpc.observe import observed

    collected = _Collector()
    add_to_server(servicer, collected)
    handlers = {}
    for name, handler in collected.handlers.items():
        parse = handler.request_deserializer
        if not handler.request_streaming and hasattr(parse, "__self__"):
            handler = handler._replace(request_deserializer=parser(parse.__self__))
        handlers[name] = observed(collected.service, name, handler)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(collected.service, handlers),))
    server.add_registered_method_handlers(collected.service, handlers)
