"""The Python side of tests/python_interop.rs: one magic-wormhole 0.24
client (mailbox only, as magic-folder's invites use it).

Usage: python python_peer.py APPID RELAY_URL invite|join
  invite: allocates a code; join: reads the code from stdin.
Then it exchanges versions (or reports a wrong code), sends two JSON messages, receives two, and
closes. Progress goes to stdout as one JSON object per line.
"""
import json
import sys

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import react

import wormhole
from wormhole.errors import WrongPasswordError

APPID, RELAY_URL, ROLE = sys.argv[1:4]
VERSIONS = {"magic-folder": {"supported-messages": ["invite-v1"]}}


def emit(**fields):
    print(json.dumps(fields), flush=True)


@inlineCallbacks
def main(reactor, code):
    w = wormhole.create(APPID, RELAY_URL, reactor, versions=VERSIONS)
    if code is None:
        w.allocate_code(2)
    else:
        w.set_code(code)
    emit(code=(yield w.get_code()))
    try:
        versions = yield w.get_versions()
    except WrongPasswordError:
        emit(error="wrong-password")
        return
    emit(versions=versions)
    for n in range(2):
        w.send_message(json.dumps({"from": "python", "n": n}).encode("utf8"))
    received = []
    for _ in range(2):
        received.append(json.loads((yield w.get_message()).decode("utf8")))
    emit(received=received)
    yield w.close()
    emit(closed=True)


if __name__ == "__main__":
    # Read the code before starting the reactor (a blocking read is fine then).
    code = sys.stdin.readline().strip() if ROLE == "join" else None
    react(main, (code,))
