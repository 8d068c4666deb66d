"""Seed 004's events with python-socketio's AsyncClient, against rill.

The client joins project 1, asks one question, collects `message_token`s
until `message_complete`, measures `ping`/`pong` latency the seed's way, and
prints a JSON summary as its last line.

Usage: python seed004_client.py URL TRANSPORTS [TOKEN]
  TRANSPORTS: websocket | polling | websocket,polling
"""

import asyncio
import json
import sys
import time

import socketio


async def main(url: str, transports: list[str], token: str | None) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    summary = {"status": None, "joined": None, "received": None, "sources": None,
               "text": "", "complete": None, "latency": None, "errors": [], "connect_error": None}
    done = asyncio.Event()

    @sio.on("connection_status")
    async def on_status(data):
        summary["status"] = data["status"]
        await sio.emit("join_project", {"project_id": 1})

    @sio.on("project_joined")
    async def on_joined(data):
        summary["joined"] = data["project_id"]
        await sio.emit("send_message", {"chat_id": 1, "message": "Hello from Python", "include_history": True})

    @sio.on("message_received")
    async def on_received(data):
        summary["received"] = data["chat_id"]

    @sio.on("message_sources")
    async def on_sources(data):
        summary["sources"] = data["sources"]

    @sio.on("message_token")
    async def on_token(data):
        summary["text"] += data["token"]

    @sio.on("message_complete")
    async def on_complete(data):
        summary["complete"] = data
        await sio.emit("ping")

    @sio.on("pong")
    async def on_pong(data):
        summary["latency"] = int(time.time() * 1000) - data["timestamp"]
        done.set()

    @sio.on("error")
    async def on_error(data):
        summary["errors"].append(data)

    try:
        await sio.connect(url, transports=transports, auth={"token": token} if token else None,
                          socketio_path="socket.io")
        await asyncio.wait_for(done.wait(), timeout=30)
    except socketio.exceptions.ConnectionError as error:
        summary["connect_error"] = str(error)
    finally:
        if sio.connected:
            await sio.disconnect()
    print(json.dumps(summary))


if __name__ == "__main__":
    url, transports = sys.argv[1], sys.argv[2].split(",")
    asyncio.run(main(url, transports, sys.argv[3] if len(sys.argv) > 3 else None))
