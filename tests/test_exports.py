"""The public API: what `import actorrt` offers, and that it says `actorrt` in reprs."""
import actorrt


def test_all_names_exist_and_are_unique():
    assert len(set(actorrt.__all__)) == len(actorrt.__all__)
    for name in actorrt.__all__:
        assert hasattr(actorrt, name), name


def test_dask_distributed_names_a_user_reaches_for():
    for name in ["Client", "Future", "LocalCluster", "get_client", "get_worker", "secede", "rejoin",
                 "worker_client", "futures_of", "CancelledError", "default_client", "TimeoutError",
                 "wait", "as_completed", "fire_and_forget", "progress", "KilledWorker", "Actor",
                 "ActorFuture", "Queue", "Lock", "MultiLock", "Semaphore", "Event", "Variable"]:
        assert name in actorrt.__all__, name


def test_client_methods_a_dask_user_reaches_for():
    for name in ["submit", "map", "gather", "scatter", "cancel", "retry", "compute", "persist", "get",
                 "run", "run_on_scheduler", "who_has", "has_what", "processing", "nthreads", "ncores",
                 "scheduler_info", "publish_dataset", "get_dataset", "list_datasets",
                 "unpublish_dataset", "datasets", "restart", "upload_file", "get_versions",
                 "wait_for_workers", "get_actor", "futures_of", "current", "as_current",
                 "dashboard_link", "close"]:
        assert hasattr(actorrt.Client, name), name
    assert actorrt.TimeoutError is TimeoutError


def test_public_classes_claim_the_top_level_module():
    assert actorrt.Client.__module__ == "actorrt"
    assert actorrt.Future.__module__ == "actorrt"
