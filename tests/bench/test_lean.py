"""The benchmark's lean client against a real websockets server: frames cut out of the byte
stream arrive whole and in order whatever the read boundaries, and pings are still answered."""

from __future__ import annotations

import asyncio
import random

from websockets.asyncio.server import serve

from bridge.bench import lean


async def test_streamed_frames_arrive_whole_in_order_across_any_read_boundary() -> None:
    sizes = [0, 1, 125, 126, 127, 1000, 65535, 65536, 70000] + [
        random.Random(5).randrange(1, 300) for _ in range(200)]
    payloads = [(f"{n:06d}:" + "x" * size).encode() for n, size in enumerate(sizes)]
    started = asyncio.Event()

    async def handler(ws) -> None:  # type: ignore[no-untyped-def]
        await ws.send("hello")
        await started.wait()
        for n, payload in enumerate(payloads):
            if n % 50 == 0:  # control frames in between go to the protocol, which answers
                async with asyncio.timeout(5):
                    await (await ws.ping())
            await ws.send(payload.decode())
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        conn = await lean.connect(f"ws://127.0.0.1:{port}")
        assert await conn.recv() == "hello"
        got: list[bytes] = []
        conn.stream(got.append)
        # Feed what arrives in pieces of random sizes: frames split at every kind of place.
        feed = conn.data_received
        rng = random.Random(11)

        def pieces(data: bytes) -> None:
            at = 0
            while at < len(data):
                step = rng.randrange(1, 40)
                feed(data[at:at + step])
                at += step

        conn.data_received = pieces  # type: ignore[method-assign]
        started.set()
        async with asyncio.timeout(10):
            while len(got) < len(payloads):
                await asyncio.sleep(0.01)
        assert got == payloads
        assert conn._cutting  # the frames were cut out here, not parsed by the protocol
        conn.close()
