"""Test worker for procworker's tests: one op per lifecycle path."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import affinity_worker as aw  # noqa: E402

hits = {}
hog = []


def handle(call):
    if call.raw:
        return bytes(reversed(call.payload))
    p = call.payload
    op = p["op"] if isinstance(p, dict) else None
    if op == "hits":
        hits[call.session] = hits.get(call.session, 0) + 1
        return {"hits": hits[call.session], "pid": os.getpid(), "worker": call.worker, "incarnation": call.incarnation}
    if op == "sleep":
        time.sleep(p["s"])
        return "slept"
    if op == "boom":
        raise ValueError("boom")
    if op == "fatal":
        raise aw.FatalError("state corrupted")
    if op == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if op == "abort":
        os.abort()
    if op == "exit":
        os._exit(p["code"])
    if op == "newdoc":
        return aw.Ref([])
    if op == "append":
        call.obj.append(p["text"])
        return len(call.obj)
    if op == "count":
        return (i for i in range(p["n"]))
    if op == "forever":
        return forever(call)
    if op == "print":
        print(p["text"])
        return "printed"
    if op == "grow":
        hog.append(bytearray(p["mb"] << 20))
        return "grown"
    return p


def forever(call):
    i = 0
    while not call.cancelled:
        yield i
        i += 1
        time.sleep(0.001)


def release(session, source):
    hits.pop(session, None)
    print("released %s (%s)" % (session, source), file=sys.stderr)


aw.run(handle, release=release)
