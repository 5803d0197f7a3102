"""joblib's "dask" backend runs on an actorrt Client (actorrt/integrations, docs/joblib.md)."""
import os
import threading

import pytest

joblib = pytest.importorskip("joblib", reason="joblib is not installed (the 'test' or 'ml' extra has it)")

from actorrt import Client, get_worker, runtime  # noqa: E402
from actorrt.integrations import joblib_backend  # noqa: E402
from actorrt.integrations.joblib_parallel import ActorrtBackend, wants_dask_distributed  # noqa: E402


@pytest.fixture(autouse=True)
def registered():
    # Tests without a client register the backend themselves (a Client does it on the
    # user's import of joblib).
    assert joblib_backend.register()


def where(i):
    return i, get_worker().address


def pid_of(i):
    return os.getpid()


def fail_on(i, bad):
    if i == bad:
        raise KeyError(f"call {i} failed")
    return i


def test_register_is_idempotent():
    from joblib.parallel import BACKENDS
    assert joblib_backend.register() and joblib_backend.register()
    assert BACKENDS["actorrt"] is ActorrtBackend
    assert BACKENDS["dask"].__name__ == "make_dask_backend"


def test_register_without_joblib_does_nothing(monkeypatch):
    monkeypatch.setattr(joblib_backend, "_registered", False)
    monkeypatch.setattr(joblib_backend, "joblib_available", lambda: False)
    assert joblib_backend.register() is False


def test_results_in_order_and_run_on_the_workers(client):
    with joblib.parallel_backend("dask") as (backend, _):
        out = joblib.Parallel()(joblib.delayed(where)(i) for i in range(50))
    assert isinstance(backend, ActorrtBackend) and backend.client is client
    assert [i for i, _ in out] == list(range(50))
    assert {address for _, address in out} <= set(client.nthreads())


def test_effective_n_jobs_is_every_worker_thread(client):
    with joblib.parallel_backend("dask"):
        assert joblib.effective_n_jobs() == 2


def test_actorrt_name_and_explicit_client(client):
    with joblib.parallel_backend("actorrt", client=client):
        assert joblib.Parallel()(joblib.delayed(abs)(-i) for i in range(5)) == [0, 1, 2, 3, 4]


def test_generator_output(client):
    with joblib.parallel_backend("dask"):
        out = joblib.Parallel(return_as="generator")(joblib.delayed(abs)(-i) for i in range(10))
        assert list(out) == list(range(10))


def test_an_exception_reaches_the_caller_with_its_type(client):
    with joblib.parallel_backend("dask"):
        with pytest.raises(KeyError, match="call 7 failed"):
            joblib.Parallel()(joblib.delayed(fail_on)(i, 7) for i in range(20))
        # The backend is still usable afterwards.
        assert joblib.Parallel()(joblib.delayed(fail_on)(i, -1) for i in range(3)) == [0, 1, 2]


class SpyBackend(ActorrtBackend):
    """Keeps the Future of each batch it submits."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.submitted = []

    def submit(self, func, callback=None):
        future = super().submit(func, callback)
        self.submitted.append(future)
        return future


release = threading.Event()  # the in-process workers share this process


def fail_first_block_others(i):
    if i == 0:
        raise ValueError("first call fails")
    assert release.wait(30), "never released"
    return i


def test_an_error_cancels_the_batches_still_out(client):
    backend = SpyBackend(client=client)
    release.clear()
    try:
        with pytest.raises(ValueError, match="first call fails"):
            joblib.Parallel(backend=backend, batch_size=1)(
                joblib.delayed(fail_first_block_others)(i) for i in range(8))
        others = backend.submitted[1:]
        assert others and all(f.cancelled() for f in others)
        assert not backend._pending
    finally:
        release.set()


def run_inner_parallel(n):
    # Inside a task: no backend named (joblib's nested choice) and "dask" named again.
    first = joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(-i) for i in range(n))
    with joblib.parallel_backend("dask"):
        second = joblib.Parallel()(joblib.delayed(where)(i) for i in range(n))
    return first, second, get_worker().address


def test_nested_parallel_runs_inside_the_task(client):
    with joblib.parallel_backend("dask"):
        out = joblib.Parallel()(joblib.delayed(run_inner_parallel)(4) for _ in range(4))
    for first, second, address in out:
        assert first == [0, 1, 2, 3]
        assert second == [(i, address) for i in range(4)]  # ran on the outer task's worker


def test_scatter_sends_the_data_once(client):
    np = pytest.importorskip("numpy")
    data = np.arange(1000)
    with joblib.parallel_backend("dask", scatter=[data]) as (backend, _):
        out = joblib.Parallel()(joblib.delayed(np.sum)(data) for _ in range(10))
    assert out == [data.sum()] * 10
    [(held, future)] = backend._scattered.values()
    assert held is data and future.status == "finished"


def payload_id(payload):
    return id(payload), get_worker().address


def test_large_arguments_are_scattered_once_per_call(client):
    np = pytest.importorskip("numpy")
    big = np.ones(200_000)  # 1.6 MB: over AUTO_SCATTER_BYTES
    with joblib.parallel_backend("dask"):
        out = joblib.Parallel(batch_size=1)(joblib.delayed(payload_id)(big) for _ in range(12))
    # Pickled into each batch, every call would see its own copy; scattered, each worker
    # holds one copy that its calls share.
    copies = {ident for ident, _ in out}
    assert len(copies) <= len({address for _, address in out})


def test_without_a_client_the_error_says_what_to_do(monkeypatch):
    monkeypatch.setattr(runtime, "_default", None)  # (a module-scoped client may be running)
    assert runtime.default_client() is None
    with pytest.raises(ValueError, match=r"create an actorrt Client first"):
        with joblib.parallel_backend("dask"):
            pass


def test_a_dask_client_still_means_dask(client):
    assert wants_dask_distributed(object())  # a client= that is not ours: joblib's own backend
    assert not wants_dask_distributed(client)
    assert not wants_dask_distributed(None)  # an actorrt client is running


def test_an_asynchronous_client_is_refused():
    async def main():
        async with Client(processes=False, n_workers=1, asynchronous=True) as c:
            with pytest.raises(ValueError, match="synchronous Client"):
                ActorrtBackend(client=c)

    import asyncio
    asyncio.run(main())


def pid_scorer(estimator, X, y):
    # The score is the pid of the process that scored: where the fit ran.
    return float(os.getpid())


def test_grid_search_runs_on_worker_processes(pclient):
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (the 'test' or 'ml' extra has it)")
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    search = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0, 10.0]}, cv=3, n_jobs=-1,
                          scoring=pid_scorer, refit=False)
    with joblib.parallel_backend("dask"):
        search.fit(X, y)
    pids = {search.cv_results_[f"split{k}_test_score"][i] for k in range(3) for i in range(3)}
    workers = set(pclient.run(os.getpid).values())
    assert pids <= {float(p) for p in workers} and os.getpid() not in workers


def test_parallel_on_worker_processes(pclient):
    with joblib.parallel_backend("dask"):
        pids = joblib.Parallel()(joblib.delayed(pid_of)(i) for i in range(20))
    assert set(pids) <= set(pclient.run(os.getpid).values())
    assert os.getpid() not in pids


def test_the_grid_search_example_runs():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (the 'test' or 'ml' extra has it)")
    import subprocess
    import sys
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "joblib_grid_search.py")
    out = subprocess.run([sys.executable, example], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert "best params: {'C': " in out.stdout


def test_nested_parallel_in_a_worker_process(pclient):
    with joblib.parallel_backend("dask"):
        out = joblib.Parallel()(joblib.delayed(run_inner_parallel)(3) for _ in range(2))
    for first, second, address in out:
        assert first == [0, 1, 2] and second == [(i, address) for i in range(3)]
