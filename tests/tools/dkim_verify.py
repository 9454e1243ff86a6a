#!/usr/bin/env python3
"""Verifies the DKIM signature of one message with dkimpy, an implementation independent of the gateway's.

Reads the message (as the SMTP server received it) on stdin. The public key is derived from --key, the
private key the gateway signed with, and served to dkimpy as the TXT record of
<selector>._domainkey.<domain> instead of a DNS lookup; any other name has no record. Exits 0 and prints
`PASS` when the signature verifies, exits 1 with dkimpy's reasons otherwise.
"""
import argparse
import base64
import io
import logging
import sys

import dkim
from cryptography.hazmat.primitives import serialization


def public_record(key_path):
    with open(key_path, "rb") as pem:
        private = serialization.load_pem_private_key(pem.read(), password=None)
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", required=True, help="PEM private key; its public half is published")
    parser.add_argument("--selector", required=True)
    parser.add_argument("--domain", required=True)
    args = parser.parse_args()
    record = public_record(args.key)
    published = f"{args.selector}._domainkey.{args.domain}.".encode()
    asked = []

    def dnsfunc(name, timeout=5):
        asked.append(name)
        return record if name.rstrip(b".") == published.rstrip(b".") else None

    log = io.StringIO()
    logger = logging.getLogger("dkim_verify")
    logger.addHandler(logging.StreamHandler(log))
    logger.setLevel(logging.DEBUG)
    message = sys.stdin.buffer.read()
    ok = dkim.verify(message, logger=logger, dnsfunc=dnsfunc)
    if ok:
        print("PASS")
        return 0
    print(f"FAIL (key records asked for: {asked})\n{log.getvalue()}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
