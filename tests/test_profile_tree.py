"""Call trees from sampled stacks, and their flame graphs: pure logic, no cluster."""
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorrt.diagnostics.flamegraph import MAX_RECTS, flame_html, flame_svg
from actorrt.diagnostics.profile import (OTHER, ProfileHistory, add_path, frame_path, merge, merge_into,
                                         new_tree, node_count, prune, task_name, trim)

A = ("a", "f.py", 1)
B = ("b", "f.py", 5)
C = ("c", "g.py", 9)

frames = st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["f.py", "g.py"]),
                   st.integers(1, 3))
paths = st.lists(st.lists(frames, max_size=6), max_size=30)


def child(tree, frame):
    return tree["children"][f"{frame[0]};{frame[1]};{frame[2]}"]


def check_counts(node):
    """A node is counted at least as often as its children together."""
    assert node["count"] >= sum(c["count"] for c in node["children"].values())
    for c in node["children"].values():
        assert c["identifier"] in node["children"]
        check_counts(c)


def test_new_tree_has_dasks_shape():
    assert new_tree() == {"identifier": "root", "count": 0, "children": {},
                          "description": {"filename": "", "name": "", "line_number": 0, "line": ""}}


def test_add_path_counts_each_frame_and_describes_it():
    tree = new_tree()
    add_path(tree, [A, B])
    add_path(tree, [A, C])
    add_path(tree, [A])
    assert tree["count"] == 3
    a = child(tree, A)
    assert a["count"] == 3 and child(a, B)["count"] == 1 and child(a, C)["count"] == 1
    assert a["description"] == {"filename": "f.py", "name": "a", "line_number": 1, "line": ""}


def test_add_path_within_budget_counts_at_the_deepest_node_there():
    tree = new_tree()
    assert add_path(tree, [A, B, C], budget=1) == 1
    assert node_count(tree) == 1 and child(tree, A)["count"] == 1
    assert add_path(tree, [A, B], budget=0) == 0
    assert child(tree, A)["count"] == 2 and tree["count"] == 2


def spin_here(event):
    event.wait(5)


def test_frame_path_stops_at_the_stop_frame_and_keeps_the_outermost():
    started, release = threading.Event(), threading.Event()

    def runner():
        started.set()
        spin_here(release)
    t = threading.Thread(target=runner)
    t.start()
    try:
        assert started.wait(5)
        frame = sys._current_frames()[t.ident]
        path = frame_path(frame, stop={threading.Thread.run.__code__})
        names = [name for name, _, _ in path]
        assert names[0] == "runner" and "spin_here" in names and "run" not in names
        assert frame_path(frame, stop={threading.Thread.run.__code__}, max_depth=1) == path[:1]
        assert frame_path(frame, stop={test_new_tree_has_dasks_shape.__code__}) == []  # not inside: nothing
        everything = [n for n, _, _ in frame_path(frame)]  # no stop: from the thread's start
        assert everything[0] == "_bootstrap" and everything[-len(names):] == names
        tree = new_tree()
        add_path(tree, path)
        assert child(tree, path[0])["description"]["line"] == "spin_here(release)"
    finally:
        release.set()
        t.join()


@settings(max_examples=60, deadline=None)
@given(paths, paths)
def test_merge_adds_counts_and_keeps_its_inputs(p1, p2):
    t1, t2, both = new_tree(), new_tree(), new_tree()
    for p in p1:
        add_path(t1, p)
        add_path(both, p)
    for p in p2:
        add_path(t2, p)
        add_path(both, p)
    before = repr(t1)
    merged = merge(t1, t2)
    assert merged == both
    assert repr(t1) == before
    check_counts(merged)


@settings(max_examples=60, deadline=None)
@given(paths, st.integers(0, 4), st.integers(0, 3))
def test_trim_bounds_depth_and_drops_rare_nodes(ps, depth, min_count):
    tree = new_tree()
    for p in ps:
        add_path(tree, p)
    cut = trim(tree, max_depth=depth, min_count=min_count)
    assert cut["count"] == tree["count"]
    check_counts(cut)

    def deepest(node, d=0):
        assert d == 0 or node["count"] >= min_count
        return max([d] + [deepest(c, d + 1) for c in node["children"].values()])
    assert deepest(cut) <= depth


def test_history_groups_by_name_and_second_and_filters():
    h = ProfileHistory(keep=10)
    h.add([A, B], "inc", when=100.2)
    h.add([A, C], "inc", when=101.7)
    h.add([C], "double", when=101.9)
    assert h.get()["count"] == 3
    assert h.get(key="inc")["count"] == 2
    assert h.get(key="inc-6f1c0ffee")["count"] == 2  # a key stands for its name
    assert h.get(key="double")["count"] == 1
    assert h.get(key="nothing")["count"] == 0
    assert h.get(start=101.5)["count"] == 2  # (by whole seconds: 101 is in)
    assert h.get(stop=100.9)["count"] == 1
    assert h.get(start=101, stop=101, key="inc")["count"] == 1
    assert h.names() == ["double", "inc"]


def test_history_memory_is_bounded():
    h = ProfileHistory(keep=3, max_nodes=5, max_groups=2)
    for second in range(10):
        for i in range(50):
            h.add([("f", "x.py", i), ("g", "x.py", i)], f"name{i % 4}", when=second + 0.5)
    assert h.samples == 500
    got = h.get()
    assert got["count"] == 150  # three seconds kept, 50 samples each
    kept = h.names()
    assert OTHER in kept and len(kept) == 3  # two names kept apart, the rest together
    assert node_count(h.get(start=9, key="name0")) <= 5


def test_history_keeps_the_last_seconds_by_second_and_older_ones_by_minute():
    h = ProfileHistory(keep=122, recent=2, max_nodes=100, max_nodes_minute=7)
    for second in range(300):
        h.add([("f", "x.py", second % 9), ("g", "x.py", second)], "f", when=second + 0.5)
    # seconds 298 and 299; the minutes from 180 and from 240 (two whole, three would be too many)
    assert h.get()["count"] == 2 + 60 + 58
    assert h.get(start=240)["count"] == 2 + 58
    assert h.get(start=298.5)["count"] == 2 + 58  # (the minute from 240 overlaps it: by minute there)
    assert h.get(stop=200)["count"] == 60
    assert h.nodes() <= 2 * 100 + 2 * 7  # each minute within its budget
    assert h.get(start=180, stop=239)["count"] == 60  # samples beyond the budget stay in the callers


def test_history_with_only_recent_seconds_drops_older_ones():
    h = ProfileHistory(keep=5, recent=60)
    for second in range(20):
        h.add([A], "a", when=second)
    assert h.get()["count"] == 5


def test_snapshot_copies_the_newest_second_only():
    h = ProfileHistory()
    h.add([A], "a", when=10)
    h.add([B], "a", when=11)
    older, newest = h.snapshot()
    h.add([C], "a", when=11)
    assert node_count(newest) == 1 and node_count(h.get(start=11)) == 2
    assert older is h._seconds[0].trees["a"]


@settings(max_examples=60, deadline=None)
@given(paths, paths, st.integers(0, 10))
def test_merge_into_within_a_budget_keeps_every_sample(p1, p2, budget):
    t1, t2 = new_tree(), new_tree()
    for p in p1:
        add_path(t1, p)
    for p in p2:
        add_path(t2, p)
    before = node_count(t1)
    created = merge_into(t1, t2, budget)
    assert created <= budget and node_count(t1) == before + created
    assert t1["count"] == len(p1) + len(p2)
    check_counts(t1)


@settings(max_examples=60, deadline=None)
@given(paths, st.integers(1, 12))
def test_prune_keeps_the_most_sampled_nodes(ps, n):
    tree = new_tree()
    for p in ps:
        add_path(tree, p)
    cut = prune(tree, n)
    assert node_count(cut) <= n and cut["count"] == tree["count"]
    check_counts(cut)
    if node_count(tree) > n:  # the heaviest outermost frame is always kept
        top = max(tree["children"].values(), key=lambda c: c["count"])
        assert max(c["count"] for c in cut["children"].values()) == top["count"]


def test_history_refuses_no_history():
    with pytest.raises(ValueError, match="keep must be at least one second"):
        ProfileHistory(keep=0)


def test_task_name():
    assert task_name("inc-6f1c") == "inc" and task_name("x") == "x" and task_name("a-b-c") == "a-b"


# --- flame graphs ------------------------------------------------------------------------
def test_flame_svg_draws_each_frame_with_its_share_and_escapes_names():
    tree = new_tree()
    evil = ("<script>alert(1)</script>", "<f>.py", 3)
    for _ in range(3):
        add_path(tree, [A, B])
    add_path(tree, [A, evil])
    svg = flame_svg(tree)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count("<rect") == 4  # all, a, b, evil
    assert "4 samples, 100.0%" in svg and "3 samples, 75.0%" in svg and "f.py:5" in svg


def test_flame_svg_of_an_empty_tree_says_so():
    assert "no samples" in flame_svg(new_tree())


def test_flame_svg_bounds_its_rects():
    tree = new_tree()
    for i in range(5000):
        add_path(tree, [A, ("f", "x.py", i)], budget=10_000)
    add_path(tree, [A, B], count=5000)
    svg = flame_svg(tree)
    assert svg.count("<rect") <= MAX_RECTS
    assert "f.py:5" in svg  # the wide frame is drawn, the thousands of slivers are not
    assert svg.count("<rect") < 10


def test_flame_html_is_self_contained():
    tree = new_tree()
    add_path(tree, [A])
    page = flame_html(tree, title="t <1>")
    assert page.startswith("<!doctype html>") and "<title>t &lt;1&gt;</title>" in page
    for fetch in ("src=", "href=", "http://", "https://", "<script"):
        assert fetch not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
