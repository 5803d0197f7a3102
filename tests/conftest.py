import threading

import pytest

from actorrt import Client, LocalCluster


@pytest.fixture
def client():
    """A sync client on a fresh in-process cluster (2 workers x 1 thread)."""
    before = set(threading.enumerate())
    with Client(n_workers=2, threads_per_worker=1, processes=False, validate=True) as c:
        yield c
        c.cluster.scheduler.state.validate() if c.cluster and c.cluster.scheduler else None
    from actorrt.testing import _check_threads
    _check_threads(before)


@pytest.fixture(scope="module")
def pclient():
    """A sync client on a cluster of real worker processes, shared by a module's tests."""
    with Client(n_workers=2, threads_per_worker=1, processes=True) as c:
        yield c
