"""Reused grpc.aio channels to nodes, one per address (router, replication, coordinator)."""

from __future__ import annotations

import grpc

from quartz_cluster.auth.cluster import MemberIdentity
from quartz_cluster.proto.quartz.v1 import node_pb2_grpc
from quartz_cluster.rpc.guard import MemberStub
from quartz_cluster.rpc.server import CHANNEL_OPTIONS


class NodeChannels:
    """`identity`: the member token every call carries (None: a cluster run with --no-auth)."""

    def __init__(self, identity: MemberIdentity | None = None) -> None:
        self.identity = identity
        self._stubs: dict[str, node_pb2_grpc.NodeStub] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, address: str) -> node_pb2_grpc.NodeStub:
        if address not in self._stubs:
            self._channels[address] = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            stub = node_pb2_grpc.NodeStub(self._channels[address])
            self._stubs[address] = MemberStub(stub, self.identity)
        return self._stubs[address]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
