"""Progress bars: a live bar on a terminal, plain lines elsewhere, opt-in for gather."""
import io
import threading

from actorrt import progress
from actorrt.client.progress import ProgressBar, Tracker, task_name
from actorrt.testing import gen_cluster

_gates: dict[str, threading.Event] = {}


def gate(name):
    _gates.setdefault(name, threading.Event()).wait(30)
    return name


def inc(x):
    return x + 1


def bad(x):
    raise ValueError(x)


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_text_fallback_prints_lines_and_summary(client):
    out = io.StringIO()
    futures = client.map(inc, range(50))
    progress(futures, file=out)
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("progress: 50/50 done (100%)")
    assert 1 <= len(lines) <= 11
    assert "\r" not in out.getvalue()


def test_terminal_bar_redraws_in_place(pclient):
    out = FakeTerminal()
    futures = pclient.map(inc, range(30))
    progress(futures, file=out)
    text = out.getvalue()
    assert "\r[" in text and text.endswith("\n")
    assert "100% | 30/30 done" in text.splitlines()[-1]


def test_multi_shows_one_row_per_task_name(client):
    out = FakeTerminal()
    futures = client.map(inc, range(5)) + [client.submit(sum, [1, 2])]
    progress(futures, file=out, multi=True)
    last = out.getvalue().split("\x1b[")[-1] if "\x1b[1F" in out.getvalue() else out.getvalue()
    assert "inc [" in out.getvalue() and "sum [" in out.getvalue()
    assert "6/6 done" in out.getvalue()
    assert last


def test_failures_count_as_done_and_are_tallied(client):
    out = io.StringIO()
    futures = [client.submit(bad, 1), client.submit(inc, 1)]
    progress(futures, file=out)
    assert "2/2 done (100%)" in out.getvalue() and "1 failed" in out.getvalue()


def test_live_updates_while_waiting(client):
    out = io.StringIO()
    blocked = client.submit(gate, "progress-live")
    quick = client.map(inc, range(9))
    t = threading.Thread(target=progress, args=([blocked] + quick,), kwargs={"file": out})
    t.start()
    from actorrt.testing import wait_until
    wait_until(lambda: "progress: " in out.getvalue(), timeout=10)  # drawn before the end
    assert "10/10" not in out.getvalue()
    _gates.setdefault("progress-live", threading.Event()).set()
    t.join(30)
    assert out.getvalue().splitlines()[-1].startswith("progress: 10/10 done")


def test_gather_progress_opt_in(client, capsys):
    futures = client.map(inc, range(20))
    assert client.gather(futures, progress=True) == list(range(1, 21))
    assert "20/20 done" in capsys.readouterr().out
    assert client.gather(futures) == list(range(1, 21))
    assert capsys.readouterr().out == ""


def test_nothing_to_show():
    assert progress([]) is None


def test_helpers():
    assert task_name("inc-0123abcd") == "inc" and task_name("plain") == "plain"
    t = Tracker([])
    assert t.finished
    ProgressBar(t, file=io.StringIO()).draw(final=True)


@gen_cluster()
async def test_progress_async(c, cluster):
    out = io.StringIO()
    futures = c.map(inc, range(10))
    await progress(futures, file=out)
    assert "10/10 done" in out.getvalue()
    assert await c.gather(futures, progress=True) == list(range(1, 11))


def test_non_futures_show_nothing():
    out = io.StringIO()
    assert progress([1, "a"], file=out) is None and out.getvalue() == ""


def watch_progress_of_subtasks(n):
    """In a task: submit subtasks and show their progress while they run."""
    from actorrt import get_client, get_worker
    client = get_client()
    out = io.StringIO()
    # On this very worker (one thread): they run only if the waiting task lets its slot go.
    futures = client.map(lambda i: i * 2, range(n), pure=False, workers=[get_worker().address])
    progress(futures, file=out)
    return sum(client.gather(futures)), out.getvalue()


def test_progress_in_a_task_gives_its_slot_back(client):
    # One worker thread each: the subtasks need the very slot the waiting task holds.
    total, text = client.submit(watch_progress_of_subtasks, 6, pure=False).result(timeout=30)
    assert total == 30 and "6/6 done" in text
