"""Echo worker: answers every call with its payload. Used by the tests and
the benchmark; also the smallest possible worker."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import affinity_worker as aw  # noqa: E402

aw.run(lambda call: call.payload)
