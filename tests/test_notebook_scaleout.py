"""Scale-out, measured (edu_runtime/notebook/scaleout.py): a bounded burst at 127.0.0.1 only,
counted by status and by the replica each answer names; one visit; and the figure, checked
as a projector shows it (no text over text or off the figure, large type, units on the axes,
the ratio written on it, a replay banner as its subtitle). No root, no containers: a small
HTTP server in this process plays the front."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from test_plots import drawn_texts, fits_a_projector

from edu_runtime.notebook import scaleout


class Front(http.server.BaseHTTPRequestHandler):
    """Answers like the lesson's app behind a round robin of two replicas; /down is 503,
    /text is not JSON."""

    protocol_version = "HTTP/1.1"  # keep-alive, as nginx talks to the notebook
    served = 0
    lock = threading.Lock()

    def do_GET(self):  # noqa: N802
        with Front.lock:
            Front.served += 1
            n = Front.served
        if self.path == "/text":
            status, body = 502, b"<html>bad gateway</html>"
        else:
            status = 503 if self.path == "/down" else 200
            body = json.dumps({"replica": f"app-{n % 2 + 1}", "visits": n}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def front():
    Front.served = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Front)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_burst_counts_codes_and_replicas(front):
    run = scaleout.burst(front, 40, clients=4)
    assert run["codes"] == {"200": 40} and run["errors"] == 0
    assert run["replicas"] == {"app-1": 20, "app-2": 20}
    assert run["visits"] == 40 and run["per_second"] > 0 and run["requests"] == 40
    assert "40 requests, 4 at a time" in scaleout.said(run)
    assert "app-1 20, app-2 20" in scaleout.said(run)
    down = scaleout.burst(front, 6, clients=2, path="/down")
    assert down["codes"] == {"503": 6} and down["replicas"] == {}
    text = scaleout.burst(front, 3, clients=1, path="/text")
    assert text["codes"] == {"502": 3} and text["replicas"] == {}


def test_a_burst_is_bounded_and_counts_refused_connections():
    with pytest.raises(ValueError, match="1 to 2000 requests"):
        scaleout.burst(1, scaleout.MAX_REQUESTS + 1)
    with pytest.raises(ValueError, match="1 to 32 clients"):
        scaleout.burst(1, 10, clients=0)
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = scaleout.burst(port, 5, clients=2)
    assert run["errors"] == 5 and run["codes"] == {} and "ConnectionRefused" in \
        run["problems"][0]
    assert "5 failed to connect" in scaleout.said(run)


def test_a_visit_says_what_came_back(front):
    seen = scaleout.visit(front, "/")
    assert seen["status"] == 200 and seen["answer"]["replica"] in ("app-1", "app-2")
    assert seen["ms"] >= 0 and seen["error"] == ""
    assert scaleout.visit(front, "/text")["answer"] == "<html>bad gateway</html>"


def test_a_visit_to_nobody_is_an_error_not_an_exception():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seen = scaleout.visit(port, timeout=1)
    assert seen["status"] is None and "ConnectionRefused" in seen["error"]


# ---- the figure ------------------------------------------------------------------------------

def run(n: int, per_second: float, requests: int) -> dict:
    return {"replicas_started": n, "per_second": per_second, "requests": requests,
            "replicas": {f"app-{i}": requests // n for i in range(1, n + 1)}}


RUNS = {"wait": [run(1, 44, 96), run(2, 86, 96), run(4, 165, 96)],
        "fast": [run(1, 990, 400), run(2, 608, 400), run(4, 1072, 400)]}
LABELS = {"wait": "visits that wait 20 ms", "fast": "visits that do not wait"}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def test_the_scale_figure_fits_a_projector_with_its_ratios():
    fig = scaleout.scale_figure(RUNS, LABELS)
    texts = fits_a_projector(fig)
    words = [t.get_text() for t, _ in texts]
    assert fig.get_suptitle() == "4 replicas: ×3.8 the throughput of 1, for visits that wait 20 ms"
    assert "visits that wait 20 ms: ×3.8" in words and "visits that do not wait: ×1.1" in words
    assert any(w.startswith("measured live on this machine") for w in words)
    left, right = fig.axes
    assert left.get_xlabel() and "(of 96)" in left.get_ylabel()
    assert "(requests/s" in right.get_ylabel()
    assert words.count("24") == 4 and words.count("48") == 2 and "96" in words  # each share


def test_a_replayed_figure_says_so():
    banner = "replay of a real run on lab-vm, 2026-12-06"
    fig = scaleout.scale_figure(RUNS, LABELS, banner=banner)
    assert banner in [t.get_text() for t, _ in drawn_texts(fig)]
    assert scaleout.ratio(RUNS["fast"]) == pytest.approx(1072 / 990)
