#!/usr/bin/env python3
"""SMTP server for the gateway tests: a real SMTP conversation over TCP on 127.0.0.1.

Recipients whose local part starts with `reject` are refused with 550; `tempfail-N` (N defaults to 1) are
refused with 451 the first N times, then accepted. Accepted messages are appended, one JSON object per line
({"from", "to", "data"}), to the --mailbox file. Prints `READY <port>` once listening; stops when stdin
closes or on SIGTERM.
"""
import argparse
import json
import re
import socket
import sys
import threading

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, mailbox):
        self.mailbox = mailbox
        self.refusals = {}
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("reject"):
            # Like Postfix, the reply quotes the recipient: the gateway must mask it wherever it keeps the text.
            return f"550 5.1.1 <{address}>: mailbox unavailable"
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mailbox", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    port = args.port or free_port()
    controller = Controller(Handler(args.mailbox), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"READY {port}", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
