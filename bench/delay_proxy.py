"""A TCP proxy on 127.0.0.1 that adds latency: every chunk of bytes is forwarded DELAY_MS / 2
after it arrived, in each direction, so a request/response round trip takes DELAY_MS longer while
throughput is kept (chunks are pipelined, not serialized). Models a distant object store for the
benchmarks without traffic to any other address. With RATE_MB_S, each connection also carries
at most that many MB (10^6 bytes) per second in each direction (an object store serves one
connection at tens of MB/s, not at the speed of a loopback).

usage: delay_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS [RATE_MB_S]
Prints "ready" once listening.
"""
import asyncio
import sys
import time

LISTEN, TARGET, DELAY = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 2000.0
RATE = float(sys.argv[4]) * 1e6 if len(sys.argv) > 4 and float(sys.argv[4]) > 0 else None


async def pipe(reader, writer):
    queue = asyncio.Queue()

    async def pump():
        free = 0.0  # when the connection has sent what went before, at RATE
        while True:
            item = await queue.get()
            if item is None:
                break
            due, data = item
            if RATE:
                due = max(due, free) + len(data) / RATE
                free = due
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(pump())
    try:
        while True:
            data = await reader.read(1 << 20)
            if not data:
                break
            queue.put_nowait((time.monotonic() + DELAY, data))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait(None)
    try:
        await sender
    except (ConnectionError, OSError):
        pass


async def handle(client_reader, client_writer):
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", TARGET)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, up_writer), pipe(up_reader, client_writer))


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
