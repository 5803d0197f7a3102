"""Bridges from other libraries' extension points to an actorrt Client.

Each integration lives in its own module, imports its library only when asked to
(``register()``), and reaches the client through :func:`actorrt.runtime.default_client`
so that this unit never imports ``client`` (the client imports it, to register).

- :mod:`.joblib_backend`: ``joblib.parallel_backend("dask")`` (and ``"actorrt"``) run
  joblib's batches as tasks on the cluster (docs/joblib.md).
"""
