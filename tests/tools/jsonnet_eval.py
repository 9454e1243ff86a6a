"""Evaluates a Kratos body template the way Kratos does: the file's function called with the hook context
as its `ctx` top-level argument. Usage: jsonnet_eval.py TEMPLATE < ctx.json > body.json"""

import sys

import _jsonnet

template = sys.argv[1]
ctx = sys.stdin.read()
sys.stdout.write(_jsonnet.evaluate_file(template, tla_codes={"ctx": ctx}))
