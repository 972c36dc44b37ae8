"""Reused grpc.aio channels to nodes, one per address (router, replication, coordinator)."""

from __future__ import annotations

import grpc

from quartz_cluster.proto.quartz.v1 import node_pb2_grpc
from quartz_cluster.rpc.server import CHANNEL_OPTIONS


class NodeChannels:
    def __init__(self) -> None:
        self._stubs: dict[str, node_pb2_grpc.NodeStub] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, address: str) -> node_pb2_grpc.NodeStub:
        if address not in self._stubs:
            self._channels[address] = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._stubs[address] = node_pb2_grpc.NodeStub(self._channels[address])
        return self._stubs[address]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
