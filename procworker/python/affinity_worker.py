"""Python side of Affinity's process workers (docs/worker-protocol.md).

Standard library only. A worker is a handler and a call to run()::

    import affinity_worker as aw

    models = {}  # per-session state, lives as long as this process

    def predict(call):
        m = models.setdefault(call.session, {"n": 0})
        m["n"] += 1
        return {"session": call.session, "n": m["n"]}

    def count(call):  # a generator answers a streaming call
        for i in range(call.payload["n"]):
            yield i

    aw.run({"predict": predict, "count": count},
           release=lambda session, source: models.pop(session, None))

- run(handler) takes one function, or a dict of functions chosen by the
  payload's "op" field. A handler gets a Call (session, pool, worker,
  incarnation, payload, ref) and returns a JSON-serialisable value, bytes
  (sent raw), or Ref(obj) for an object that stays here: the caller gets a
  ref, and calls made on it find the object as call.obj.
- A streaming call iterates what the handler returns; call.cancelled is set
  when the caller stops reading. Items go within the host's window: past
  it, the next item waits until the consumer has taken earlier ones.
- An exception answers the call with an error; FatalError (or any
  exception raised with fatal=True through fatal()) also makes the host
  restart this process.
- release(session, source) runs when a session ends; the refs the session
  made are dropped first.
- Heartbeats are answered by a reader thread, so a long call does not look
  like a hung process. Calls run one at a time on the main thread (threads=N
  runs N at once; then handlers must be thread-safe).
- print() goes to stderr, which the host logs: stdout carries the frames.
"""

import inspect
import json
import os
import queue
import struct
import sys
import threading
import traceback

__all__ = ["Call", "Ref", "FatalError", "fatal", "run", "PROTOCOL"]

PROTOCOL = 1

# Frame types and flags: the wire protocol.
READY, CALL, RESULT, ERROR, ITEM, END, RELEASE, PING, PONG, CANCEL, CREDIT = range(1, 12)
RAW, STREAM, REF = 1, 2, 4

_HEADER = struct.Struct(">IBBQ")  # length of the rest, type, flags, id
_HEADER_LEN = 10  # type + flags + id: counted in the length
_U32 = struct.Struct(">I")


class FatalError(Exception):
    """Raised by a handler: the call fails and the host restarts this process."""


def fatal(exc):
    """Marks any exception as fatal: raise fatal(ValueError("corrupt"))."""
    exc._affinity_fatal = True
    return exc


class Ref:
    """Return Ref(obj) (optionally with a key) to keep obj in this process
    and give the caller a ref to it."""

    __slots__ = ("obj", "key")

    def __init__(self, obj, key=None):
        self.obj = obj
        self.key = key


class Call:
    """One call: who made it, its payload, and the ref it was made on."""

    __slots__ = ("id", "session", "pool", "worker", "incarnation", "ref", "payload", "raw", "stream", "_cancel", "_kit", "_credit", "_cv")

    def __init__(self, kit, cid, meta, payload, raw, stream):
        self._kit = kit
        self.id = cid
        self.session = meta.get("session", "")
        self.pool = meta.get("pool", "")
        self.worker = meta.get("worker", 0)
        self.incarnation = meta.get("incarnation", 0)
        self.ref = meta.get("ref")  # the key of the ref the call was made on, or None
        self.payload = payload
        self.raw = raw
        self.stream = stream
        self._cancel = threading.Event()
        # A stream with a window sends that many items, then one more per
        # credit the host grants as its consumer takes them.
        window = meta.get("window")
        self._credit = window if stream and window else None
        self._cv = threading.Condition()

    @property
    def cancelled(self):
        """True once the caller gave up (context ended, stream closed)."""
        return self._cancel.is_set()

    def _grant(self, n):
        with self._cv:
            if self._credit is not None:
                self._credit += n
            self._cv.notify_all()

    def _wake(self):
        with self._cv:
            self._cv.notify_all()

    def _take_credit(self):
        """Waits for credit to send one item; False once cancelled."""
        with self._cv:
            while self._credit is not None and self._credit <= 0 and not self.cancelled:
                self._cv.wait()
            if self.cancelled:
                return False
            if self._credit is not None:
                self._credit -= 1
            return True

    @property
    def obj(self):
        """The object behind the ref this call was made on (KeyError if none)."""
        if self.ref is None:
            raise KeyError("call was not made on a ref")
        return self._kit.refs[self.ref][1]


class _Kit:
    def __init__(self, handler, release, threads, max_frame):
        self.handler = handler
        self.release_hook = release
        self.threads = threads
        self.max_frame = max_frame
        self.refs = {}  # key -> (session, obj)
        self.next_ref = 0
        self.calls = {}  # id -> Call, for cancel
        self.lock = threading.Lock()  # refs and calls, with threads > 1
        self.wlock = threading.Lock()
        self.work = queue.Queue()
        # Frames own fd 1; whatever else writes to stdout goes to stderr.
        self.out = os.fdopen(os.dup(1), "wb", buffering=0)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self.inp = os.fdopen(os.dup(0), "rb", buffering=1 << 16)

    # -- frames ---------------------------------------------------------

    def send(self, typ, cid=0, body=b"", flags=0):
        data = _HEADER.pack(_HEADER_LEN + len(body), typ, flags, cid) + body
        view = memoryview(data)
        with self.wlock:
            while view:
                n = self.out.write(view)
                view = view[n:]

    def read_frame(self):
        hdr = self.inp.read(_HEADER.size)
        if len(hdr) < _HEADER.size:
            return None  # EOF: the host closed stdin (stop) or died
        length, typ, flags, cid = _HEADER.unpack(hdr)
        n = length - _HEADER_LEN
        if n < 0 or length > self.max_frame:
            raise ValueError("bad frame length %d" % length)
        body = self.inp.read(n) if n else b""
        if len(body) < n:
            return None
        return typ, flags, cid, body

    # -- threads --------------------------------------------------------

    def reader(self):
        try:
            while True:
                fr = self.read_frame()
                if fr is None:
                    break
                typ, flags, cid, body = fr
                if typ == PING:
                    self.send(PONG, cid)
                elif typ == CANCEL:
                    with self.lock:
                        c = self.calls.get(cid)
                    if c is not None:
                        c._cancel.set()
                        c._wake()
                elif typ == CREDIT:
                    with self.lock:
                        c = self.calls.get(cid)
                    if c is not None:
                        c._grant(_U32.unpack(body)[0])
                elif typ in (CALL, RELEASE):
                    self.work.put(fr)
                else:
                    print("affinity_worker: ignoring frame type %d" % typ, file=sys.stderr)
        except Exception:
            traceback.print_exc()
        finally:
            for _ in range(self.threads):
                self.work.put(None)

    def serve(self):
        while True:
            fr = self.work.get()
            if fr is None:
                return
            typ, flags, cid, body = fr
            if typ == RELEASE:
                self.release(body)
            else:
                self.call(flags, cid, body)

    # -- calls ----------------------------------------------------------

    def release(self, body):
        info = json.loads(body)
        session = info.get("session", "")
        with self.lock:
            for key in [k for k, (s, _) in self.refs.items() if s == session]:
                del self.refs[key]
        if self.release_hook is not None:
            try:
                self.release_hook(session, info.get("source", ""))
            except Exception:
                traceback.print_exc()

    def call(self, flags, cid, body):
        stream = bool(flags & STREAM)
        try:
            (n,) = _U32.unpack_from(body)
            meta = json.loads(body[4 : 4 + n])
            payload = body[4 + n :]
            raw = bool(flags & RAW)
            payload = bytes(payload) if raw else json.loads(payload)
        except Exception as e:
            self.error(cid, e)
            return
        c = Call(self, cid, meta, payload, raw, stream)
        with self.lock:
            self.calls[cid] = c
        try:
            out = self.dispatch(c)
            if stream:
                for item in out:
                    if not c._take_credit():
                        break
                    body, fl = self.encode(c, item)
                    self.send(ITEM, cid, body, fl)
                if inspect.isgenerator(out):
                    out.close()
                self.send(END, cid)
            else:
                if inspect.isgenerator(out):
                    out = list(out)
                body, fl = self.encode(c, out)
                self.send(RESULT, cid, body, fl)
        except Exception as e:
            self.error(cid, e)
        finally:
            with self.lock:
                self.calls.pop(cid, None)

    def dispatch(self, c):
        h = self.handler
        if isinstance(h, dict):
            op = c.payload.get("op") if isinstance(c.payload, dict) else None
            if op not in h:
                raise KeyError("no handler for op %r" % (op,))
            h = h[op]
        return h(c)

    def encode(self, c, value):
        if isinstance(value, Ref):
            with self.lock:
                key = value.key
                if key is None:
                    self.next_ref += 1
                    key = "ref-%d" % self.next_ref
                self.refs[key] = (c.session, value.obj)
            return key.encode(), REF
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value), RAW
        return json.dumps(value, separators=(",", ":")).encode(), 0

    def error(self, cid, exc):
        is_fatal = isinstance(exc, FatalError) or getattr(exc, "_affinity_fatal", False)
        if is_fatal:
            traceback.print_exception(type(exc), exc, exc.__traceback__)
        body = {"type": type(exc).__name__, "message": str(exc), "fatal": is_fatal}
        self.send(ERROR, cid, json.dumps(body).encode())


def run(handler, release=None, threads=1, max_frame=16 << 20):
    """Serve calls until the host closes stdin. Blocks; returns then."""
    kit = _Kit(handler, release, threads, max_frame)
    reader = threading.Thread(target=kit.reader, name="affinity-reader", daemon=True)
    reader.start()
    kit.send(READY, 0, json.dumps({"protocol": PROTOCOL, "pid": os.getpid(), "lang": "python", "credit": True}).encode())
    workers = [threading.Thread(target=kit.serve, name="affinity-call-%d" % i, daemon=True) for i in range(threads - 1)]
    for t in workers:
        t.start()
    kit.serve()
    for t in workers:
        t.join()
