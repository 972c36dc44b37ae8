"""The authentication and front-door wrapper of every public RPC method."""

from __future__ import annotations

import functools
import time

from quartz_cluster.errors import QuartzError


def guarded(method):
    """Authenticate the caller's API key (UNAUTHENTICATED if it is missing, malformed, unknown,
    revoked or expired) and pass its Principal to the method, which authorizes the action.
    With auth on, the front door (router/frontdoor.py) also applies rate limits and quotas
    first and journals the call's meter record, audit event and query entry before it is
    answered. Under `rpc`: every public method is wrapped, the HTTP gateway calls the same
    methods."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self, request, context):
        metadata = context.invocation_metadata()
        door = self.frontdoor
        if door is None:
            return await method(self, request, context, self.auth.authenticate(metadata))
        received = time.time()
        try:
            principal = self.auth.authenticate(metadata)
        except QuartzError as exc:
            door.auth_failed(name, exc, context, metadata, received)
            raise
        rid, meter, namespace = await door.admit(principal, name, request, metadata)
        try:
            reply = await method(self, request, context, principal)
        except Exception as exc:
            door.finish(
                principal, name, request, None, exc, context, metadata, received, rid, False, namespace
            )
            raise
        door.finish(principal, name, request, reply, None, context, metadata, received, rid, meter, namespace)
        return reply

    return wrapper
