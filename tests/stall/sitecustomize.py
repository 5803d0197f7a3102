# Imported at start-up by worker processes of one test (via PYTHONPATH): a worker that
# hangs before it can register with its scheduler.
import os
import time

if os.environ.get("ACTORRT_TEST_STALL"):
    time.sleep(60)
