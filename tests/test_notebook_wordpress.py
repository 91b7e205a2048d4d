"""notebook/wordpress.py's parts that need no WordPress: a page as a reader sees it, the
loopback-only rule, and WordPress's own messages on its error pages (tests/test_wordpress.py
drives a real one: install, login, post, read)."""

from __future__ import annotations

import http.server
import threading

import pytest

from edu_runtime.notebook import wordpress as wp

PAGE = """<!DOCTYPE html><html><head><title>A real post &#8211; Hello</title>
<style>body{color:red}</style><script>var x = "not text";</script></head>
<body><header><nav><a href="/">Hello</a></nav></header>
<main><h1>A real post</h1><div class="entry"><p>Written over   HTTP,
read back.</p></div></main><footer><p>Proudly powered by WordPress</p></footer></body></html>
"""


def test_a_page_as_a_reader_sees_it():
    text = wp.page_text(PAGE)
    assert text["title"] == "A real post – Hello"
    assert text["main"] == ["A real post", "Written over HTTP, read back."]
    assert text["lines"] == ["Hello", "A real post", "Written over HTTP, read back.",
                             "Proudly powered by WordPress"]


@pytest.mark.parametrize("url", ["https://127.0.0.1:8080", "http://example.org/",
                                 "http://10.0.0.1:80"])
def test_only_the_loopback_address_is_asked(url):
    with pytest.raises(ValueError, match="127.0.0.1"):
        wp.Site(url)


class _Refuses(http.server.BaseHTTPRequestHandler):
    """Answers as WordPress does when a form is refused, and moves / elsewhere."""

    def do_GET(self):  # noqa: N802
        self.send_response(302)
        self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/elsewhere")
        self.end_headers()

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        body = (b'<div id="login_error"><strong>Error:</strong> The password you entered '
                b'for the username <strong>x</strong> is incorrect.</div>')
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Refuses)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_redirect_is_shown_not_followed_and_a_refusal_is_a_sentence(refusing):
    site = wp.Site(refusing)
    assert site.get("/")["location"] == "/elsewhere"
    with pytest.raises(wp.WordPressError, match="the password you entered for the username x "
                                                "is incorrect|The password you entered"):
        site.login("x", "wrong")
    with pytest.raises(wp.WordPressError, match="the install did not complete"):
        site.install("t", "x", "p", "x@example.test")
    assert [(p["method"], p["status"]) for p in site.pages] == [
        ("GET", 302), ("GET", 302), ("POST", 200), ("POST", 200)]


def test_nothing_answering_is_a_sentence():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(wp.WordPressError, match="is the container running"):
        wp.Site(f"http://127.0.0.1:{port}").get("/")
