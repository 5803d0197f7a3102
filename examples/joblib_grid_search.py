"""A scikit-learn grid search whose fits run on an actorrt cluster, through joblib.

Code written for dask.distributed (``joblib.parallel_backend("dask")``) runs unchanged:
only the ``Client`` import differs. With ``python examples/joblib_grid_search.py``
(needs the ``ml`` extra: joblib and scikit-learn).
"""
import time

import joblib
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC

from actorrt import Client


def main():
    X, y = make_classification(n_samples=300, n_features=10, random_state=0)
    grid = {"C": [0.1, 1.0, 10.0], "gamma": [0.01, 0.1, 1.0]}
    search = GridSearchCV(SVC(), grid, cv=3, n_jobs=-1)
    with Client(n_workers=2, threads_per_worker=1) as client:
        start = time.perf_counter()
        with joblib.parallel_backend("dask"):
            search.fit(X, y)
        elapsed = time.perf_counter() - start
        print(f"{len(search.cv_results_['params'])} candidates x 3 folds on "
              f"{len(client.nthreads())} workers in {elapsed:.2f} s")
    print(f"best params: {search.best_params_} (accuracy {search.best_score_:.3f})")


if __name__ == "__main__":
    main()
