import os
import threading

import pytest

# Worker processes must be able to import the test modules whose functions they run
# (functions defined in an importable module are pickled by reference, as in dask).
_here = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_here, os.environ.get("PYTHONPATH")) if p)

from actorrt import Client


@pytest.fixture
def client():
    """A sync client on a fresh in-process cluster (2 workers x 1 thread)."""
    before = set(threading.enumerate())
    with Client(n_workers=2, threads_per_worker=1, processes=False, validate=True) as c:
        yield c
        if c.cluster and c.cluster.scheduler:
            state = c.cluster.scheduler.state

            async def validate():  # on the loop: the state is only ever touched there
                state.validate()
            c.sync(validate)
    from actorrt.testing import _check_threads
    _check_threads(before)


@pytest.fixture(scope="module")
def pclient():
    """A sync client on a cluster of real worker processes, shared by a module's tests."""
    with Client(n_workers=2, threads_per_worker=1, processes=True) as c:
        yield c


@pytest.fixture(params=["inproc", "processes"])
def any_client(request):
    """The same test on both: ``client`` (in-process) and ``pclient`` (worker processes)."""
    return request.getfixturevalue("client" if request.param == "inproc" else "pclient")
