"""A Python worker holding a small in-memory model per user session.

Each session's model is an online mean of the numbers the user sent: state
that exists only in this process. The host (main.go) checks on every call
that the model it reaches is the one it has been feeding.
"""

import os
import signal

import affinity_worker as aw

models = {}  # session -> {"n": count, "mean": running mean}


def learn(call):
    p = call.payload
    if p.get("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)  # a native extension's bug, say
    m = models.setdefault(call.session, {"n": 0, "mean": 0.0})
    m["n"] += 1
    m["mean"] += (p["x"] - m["mean"]) / m["n"]
    return {"n": m["n"], "mean": m["mean"], "pid": os.getpid(), "worker": call.worker}


def release(session, source):
    models.pop(session, None)


aw.run({"learn": learn}, release=release)
