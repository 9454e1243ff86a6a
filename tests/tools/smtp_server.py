#!/usr/bin/env python3
"""SMTP server for the gateway tests: a real SMTP conversation over TCP on 127.0.0.1.

Recipients whose local part starts with `reject` are refused with 550; `tempfail-N` (N defaults to 1) are
refused with 451 the first N times, then accepted. Accepted messages are appended, one JSON object per line
({"from", "to", "data"}), to the --mailbox file. Listens on --port (0: a port the system picks, held from
the start) and prints `READY <port>` once listening; stops when stdin closes or on SIGTERM.
"""
import argparse
import asyncio
import json
import re
import socket
import sys
import threading

from aiosmtpd.smtp import SMTP


class Handler:
    def __init__(self, mailbox):
        self.mailbox = mailbox
        self.refusals = {}
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("reject"):
            return "550 5.1.1 mailbox unavailable"
        match = re.match(r"tempfail(?:-(\d+))?", local)
        if match:
            times = int(match.group(1) or 1)
            with self.lock:
                seen = self.refusals.get(address, 0)
                self.refusals[address] = seen + 1
            if seen < times:
                return "451 4.3.0 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        line = json.dumps(
            {
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "data": envelope.content.decode("utf-8", "replace"),
            }
        )
        with self.lock, open(self.mailbox, "a", encoding="utf-8") as out:
            out.write(line + "\n")
        return "250 2.0.0 accepted"


def serve(handler, sock):
    """Runs the SMTP server on the already listening `sock` in a background thread's event loop."""
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        loop.create_server(lambda: SMTP(handler, hostname="reclaim-test-smtp", loop=loop), sock=sock)
    )
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def stop():
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()

    return stop


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mailbox", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    # Bound and listening before the port is reported: the port is never released for someone else to take
    # between choosing it and serving on it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(64)
    stop = serve(Handler(args.mailbox), sock)
    print(f"READY {sock.getsockname()[1]}", flush=True)
    try:
        sys.stdin.read()
    finally:
        stop()


if __name__ == "__main__":
    main()
