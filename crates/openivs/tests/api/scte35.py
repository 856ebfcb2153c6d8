"""Decodes SCTE-35 splice_info_sections given in hex on the command line with threefive (an
independent parser, from tests-requirements.txt) and prints one JSON object per section: whether
it decoded (CRC included), and the splice_insert fields the ad-break tests check."""
import json
import sys

import threefive

for hex_text in sys.argv[1:]:
    cue = threefive.Cue(hex_text)
    decoded = bool(cue.decode())
    command = cue.command.get()
    info = cue.info_section.get()
    print(json.dumps({
        "decoded": decoded,
        "table_id": info.get("table_id"),
        "command": command.get("name"),
        "event_id": command.get("splice_event_id"),
        "out_of_network": command.get("out_of_network_indicator"),
        "pts_time": command.get("pts_time"),
        "duration": command.get("break_duration"),
        "auto_return": command.get("break_auto_return"),
    }))
