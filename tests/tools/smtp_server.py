#!/usr/bin/env python3
"""SMTP server for the gateway tests: a real SMTP conversation over TCP on 127.0.0.1.

Recipients whose local part starts with `reject` are refused with 550; `tempfail-N` (N defaults to 1) are
refused with 451 the first N times, then accepted. Accepted messages are appended, one JSON object per line
({"from", "to", "data", "tls", "auth"}), to the --mailbox file. Listens on --port (0: a port the system
picks, held from the start) and prints `READY <port>` once listening; stops when stdin closes or on SIGTERM.

Options for the tests that need more:
--tls-dir DIR   STARTTLS with a certificate for 127.0.0.1 and localhost from a throwaway CA (trustme), whose
                certificate is written to DIR/ca.pem; mail is refused before STARTTLS.
--auth U:P      AUTH (PLAIN, LOGIN) with this user and password is required (after STARTTLS with --tls-dir).
--events        prints `HELD <rcpt>` when a message to a `hold…@` recipient arrives and keeps it until a
                `RELEASE` line on stdin; prints `ACCEPTED <rcpt>` for every accepted message.
"""
import argparse
import asyncio
import json
import os
import re
import socket
import sys
import threading

from aiosmtpd.smtp import SMTP


def say(line):
    print(line, flush=True)


class Handler:
    def __init__(self, mailbox, events=False):
        self.mailbox = mailbox
        self.events = events
        self.released = threading.Event()
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
        held = [r for r in envelope.rcpt_tos if r.lower().startswith("hold")]
        if self.events and held:
            say(f"HELD {held[0]}")
            await asyncio.get_running_loop().run_in_executor(None, self.released.wait)
        login = session.auth_data.login if session.authenticated and session.auth_data else None
        line = json.dumps(
            {
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "data": envelope.content.decode("utf-8", "replace"),
                "tls": session.ssl is not None,
                "auth": login.decode("utf-8", "replace") if isinstance(login, bytes) else login,
            }
        )
        with self.lock, open(self.mailbox, "a", encoding="utf-8") as out:
            out.write(line + "\n")
        if self.events:
            for rcpt in envelope.rcpt_tos:
                say(f"ACCEPTED {rcpt}")
        return "250 2.0.0 accepted"


def authenticator(user, password):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    return check


def tls_context(directory):
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca.cert_pem.write_to_path(os.path.join(directory, "ca.pem"))
    return context


def serve(handler, sock, options):
    """Runs the SMTP server on the already listening `sock` in a background thread's event loop."""
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        loop.create_server(
            lambda: SMTP(handler, hostname="reclaim-test-smtp", loop=loop, **options), sock=sock
        )
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
    parser.add_argument("--tls-dir")
    parser.add_argument("--auth")
    parser.add_argument("--events", action="store_true")
    args = parser.parse_args()
    handler = Handler(args.mailbox, events=args.events)
    options = {}
    if args.tls_dir:
        options.update(tls_context=tls_context(args.tls_dir), require_starttls=True)
    if args.auth:
        user, password = args.auth.split(":", 1)
        options.update(
            authenticator=authenticator(user, password),
            auth_required=True,
            auth_require_tls=bool(args.tls_dir),
        )
    # Bound and listening before the port is reported: the port is never released for someone else to take
    # between choosing it and serving on it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(64)
    stop = serve(handler, sock, options)
    say(f"READY {sock.getsockname()[1]}")
    try:
        for line in sys.stdin:
            if line.strip() == "RELEASE":
                handler.released.set()
    finally:
        handler.released.set()
        stop()


if __name__ == "__main__":
    main()
