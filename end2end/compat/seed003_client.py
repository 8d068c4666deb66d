"""Seed 003's Python client flow, run against rill.

It behaves as the seed's example does, step for step: connect with the
`websockets` package, send an `auth` frame, read exactly one frame and require
`auth_success`, send a `message` with `session_id: "python-session-1"`, then read
frames — printing `progress` as `[step] message`, appending every `token` — until
`complete` (printing `response` and `metadata.agent`) or `error`.

Usage: seed003_client.py WS_URL TOKEN [QUESTION]
The last line printed is a JSON summary the end-to-end test checks.
"""

import asyncio
import json
import sys

import websockets


async def chat_stream(uri: str, token: str, question: str) -> dict:
    summary = {"steps": [], "accumulated": "", "response": None, "agent": None, "error": None}
    async with websockets.connect(uri) as websocket:
        await websocket.send(json.dumps({"type": "auth", "token": token}))

        # The first frame after `auth` is the auth answer.
        auth_data = json.loads(await websocket.recv())
        if auth_data["type"] != "auth_success":
            print("Authentication failed")
            summary["error"] = auth_data
            return summary
        print("Authenticated!")
        summary["user"] = auth_data["user"]

        await websocket.send(json.dumps({
            "type": "message",
            "message": question,
            "session_id": "python-session-1",
        }))

        async for message in websocket:
            data = json.loads(message)
            if data["type"] == "progress":
                print(f"[{data['step']}] {data['message']}")
                summary["steps"].append(data["step"])
            elif data["type"] == "token":
                print(data["token"], end="", flush=True)
                summary["accumulated"] += data["token"]
            elif data["type"] == "complete":
                print("\n\nComplete!")
                print(f"Response: {data['response']}")
                print(f"Agent: {data['metadata']['agent']}")
                summary["response"] = data["response"]
                summary["agent"] = data["metadata"]["agent"]
                summary["session_id"] = data["session_id"]
                break
            elif data["type"] == "error":
                print(f"Error: {data['error']}")
                summary["error"] = data
                break
    return summary


def main() -> int:
    uri, token = sys.argv[1], sys.argv[2]
    question = sys.argv[3] if len(sys.argv) > 3 else "What is the engine power?"
    summary = asyncio.run(chat_stream(uri, token, question))
    print()
    print(json.dumps(summary))
    return 0 if summary["response"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
