"""The public API: what `import actorrt` offers, and that it says `actorrt` in reprs."""
import actorrt


def test_all_names_exist_and_are_unique():
    assert len(set(actorrt.__all__)) == len(actorrt.__all__)
    for name in actorrt.__all__:
        assert hasattr(actorrt, name), name


def test_dask_distributed_names_a_user_reaches_for():
    for name in ["Client", "Future", "LocalCluster", "get_client", "get_worker", "secede", "rejoin",
                 "worker_client", "futures_of", "CancelledError"]:
        assert name in actorrt.__all__, name


def test_public_classes_claim_the_top_level_module():
    assert actorrt.Client.__module__ == "actorrt"
    assert actorrt.Future.__module__ == "actorrt"
