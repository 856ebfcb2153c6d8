#!/usr/bin/env python3
"""Regenerates crates/model/ivs-service-model.json from the botocore IVS service model.

The server validates every request against the service model itself, so the copy it embeds must
be the model, less its documentation strings (which are 80% of the file and never read).
Usage: tools/trim-service-model.py path/to/service-2.json > crates/model/ivs-service-model.json
"""
import json
import sys


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k not in ("documentation", "documentationUrl")}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


model = strip(json.load(open(sys.argv[1])))
json.dump(model, sys.stdout, indent=0, sort_keys=True)
sys.stdout.write("\n")
