"""WordPress driven by HTTP requests alone: install it, log in, post, read the post back.

A student installs WordPress in a browser: the installer's form, then the login form, then
the editor. A notebook does the same with the same requests (``urllib`` and a cookie jar,
nothing else), so a lesson shows what really goes over the wire, and every page is timed:

- ``install(url, ...)``: ``POST /wp-admin/install.php?step=2`` with the installer's fields
  (site title, admin user, password twice, "confirm use of weak password", e-mail);
- ``Site(url).login(user, password)``: ``GET /wp-login.php`` (WordPress sets a test cookie),
  then ``POST /wp-login.php``; the jar keeps the ``wordpress_logged_in_...`` cookie;
- ``site.post(title, text)``: the REST API, ``POST /?rest_route=/wp/v2/posts``, with the
  nonce WordPress gives a logged-in user (``admin-ajax.php?action=rest-nonce``), as its own
  editor sends it in ``X-WP-Nonce`` (a cookie alone is refused: that is the CSRF guard);
- ``site.read(post_id)``: the post as a visitor sees it, ``GET /?p=ID``, and its title and
  text as plain lines (``page_text``).

Redirects are never followed: each request is one page, timed by itself, and a redirect is
shown as what it is (``302 -> /wp-admin/install.php``). Only 127.0.0.1 is ever asked.

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

import html
import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from typing import Any

TIMEOUT = 30.0  # seconds for one page; the lesson's pages answer in well under 2 s


class WordPressError(RuntimeError):
    """A step of the install, login or post that WordPress refused; the sentence says why."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None  # urllib then raises HTTPError, which carries the 30x answer


def _local(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
        raise ValueError(f"{url!r}: the course's WordPress is asked on http://127.0.0.1:PORT "
                         "only")
    return url.rstrip("/")


class Site:
    """One WordPress site at ``url`` (http://127.0.0.1:PORT), with a cookie jar of its own."""

    def __init__(self, url: str):
        self.url = _local(url)
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())
        self.pages: list[dict[str, Any]] = []  # every request: method, path, status, ms

    def request(self, method: str, path: str, *, form: dict[str, str] | None = None,
                body: Any = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """One request, no redirect followed: ``{"method", "path", "status", "location",
        "ms", "text"}`` (``location``: where a 30x points, as a path)."""
        data = None
        headers = dict(headers or {})
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers=headers)
        began = time.perf_counter()
        try:
            with self.opener.open(req, timeout=TIMEOUT) as reply:
                status, got, text = reply.status, reply.headers, reply.read()
        except urllib.error.HTTPError as answer:  # 30x (not followed), 4xx, 5xx
            status, got, text = answer.code, answer.headers, answer.read()
        except OSError as exc:
            raise WordPressError(f"{method} {self.url}{path} got no answer ({exc}): is the "
                                 "container running, and its port published?") from None
        ms = round((time.perf_counter() - began) * 1e3, 1)
        location = got.get("Location", "")
        if location.startswith(self.url):
            location = location[len(self.url):] or "/"
        page = {"method": method, "path": path, "status": status, "location": location,
                "ms": ms, "text": text.decode(errors="replace")}
        self.pages.append({k: v for k, v in page.items() if k != "text"})
        return page

    def get(self, path: str = "/") -> dict[str, Any]:
        """``GET path`` (see ``request``)."""
        return self.request("GET", path)

    def install(self, title: str, user: str, password: str, email: str) -> dict[str, Any]:
        """The installer's form, sent: the site's title and its administrator."""
        page = self.request("POST", "/wp-admin/install.php?step=2", form={
            "weblog_title": title, "user_name": user, "admin_password": password,
            "admin_password2": password, "pw_weak": "1", "admin_email": email,
            "blog_public": "0", "language": "", "Submit": "Install WordPress"})
        if page["status"] != 200 or "Success!" not in page["text"]:
            said = _said(page["text"]) or f"status {page['status']}"
            raise WordPressError(f"the install did not complete: WordPress said {said!r}")
        return page

    def login(self, user: str, password: str) -> dict[str, Any]:
        """Log in as a browser does: the login page (its test cookie), then the form."""
        self.get("/wp-login.php")
        page = self.request("POST", "/wp-login.php", form={
            "log": user, "pwd": password, "wp-submit": "Log In", "testcookie": "1",
            "redirect_to": self.url + "/wp-admin/"})
        if page["status"] != 302 or not self.logged_in():
            raise WordPressError(f"the login as {user!r} failed: WordPress said "
                                 f"{_said(page['text']) or page['status']!r}")
        return page

    def logged_in(self) -> bool:
        """Whether the jar holds WordPress's logged-in cookie."""
        return any(c.name.startswith("wordpress_logged_in_") for c in self.jar)

    def nonce(self) -> str:
        """The REST API nonce WordPress gives the logged-in user (what its editor sends)."""
        page = self.get("/wp-admin/admin-ajax.php?action=rest-nonce")
        if page["status"] != 200 or not re.fullmatch(r"[0-9a-f]{10}", page["text"].strip()):
            raise WordPressError("WordPress gave no REST nonce: log in first")
        return page["text"].strip()

    def post(self, title: str, text: str) -> dict[str, Any]:
        """A published post, made through the REST API as the editor makes it:
        ``{"id", "link", "status", "ms"}``."""
        page = self.request("POST", "/?rest_route=/wp/v2/posts",
                            body={"title": title, "content": text, "status": "publish"},
                            headers={"X-WP-Nonce": self.nonce()})
        try:
            answer = json.loads(page["text"])
        except ValueError:
            answer = {}
        if page["status"] != 201 or "id" not in answer:
            raise WordPressError(f"WordPress did not make the post (status {page['status']}: "
                                 f"{answer.get('message') or _said(page['text'])})")
        return {"id": answer["id"], "link": answer.get("link", ""),
                "status": answer.get("status", ""), "ms": page["ms"]}

    def read(self, post_id: int) -> dict[str, Any]:
        """The post as a visitor reads it (no cookies), ``GET /?p=ID``: ``{"status", "ms",
        "title", "lines"}`` (the page's title, and the text of its main part as lines)."""
        visitor = Site(self.url)
        page = visitor.get(f"/?p={int(post_id)}")
        self.pages.append(visitor.pages[-1])
        text = page_text(page["text"])
        return {"status": page["status"], "ms": page["ms"], "title": text["title"],
                "lines": text["main"] or text["lines"]}


def install(url: str, title: str, user: str, password: str, email: str) -> Site:
    """Install WordPress at ``url`` (the installer's form); the site, its pages so far."""
    site = Site(url)
    site.install(title, user, password, email)
    return site


def post(url: str, user: str, password: str, title: str, text: str) -> dict[str, Any]:
    """Log in at ``url`` and publish a post; ``{"id", "link", "status", "ms"}``."""
    site = Site(url)
    site.login(user, password)
    return site.post(title, text)


class _Text(HTMLParser):
    """The text a reader sees: no scripts or styles, one line per block."""

    BLOCKS = {"p", "div", "h1", "h2", "h3", "h4", "li", "br", "header", "footer", "main",
              "article", "section", "title", "nav", "figure", "figcaption", "time"}
    HIDDEN = {"script", "style", "noscript", "template", "svg"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.hidden = 0
        self.title = ""
        self.in_title = False
        self.main = 0  # inside <main>: its lines are also kept apart
        self.main_lines: list[str] = []

    def _flush(self) -> None:
        line = " ".join("".join(self.current).split())
        if line:
            self.lines.append(line)
            if self.main:
                self.main_lines.append(line)
        self.current = []

    def handle_starttag(self, tag, attrs):  # noqa: D102
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag in self.BLOCKS:
            self._flush()
        self.main += tag == "main"
        self.in_title = tag == "title"

    def handle_endtag(self, tag):  # noqa: D102
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BLOCKS:
            self._flush()
        if tag == "main":
            self.main = max(0, self.main - 1)
        if tag == "title":
            self.in_title = False

    def handle_data(self, data):  # noqa: D102
        if self.hidden:
            return
        if self.in_title:
            self.title += data
        else:
            self.current.append(data)


def page_text(text: str) -> dict[str, Any]:
    """An HTML page as a reader sees it: ``{"title", "lines", "main"}`` (no scripts, no
    styles; ``main``: the lines inside ``<main>``, the page without its header and footer)."""
    parser = _Text()
    parser.feed(text)
    parser.close()
    parser._flush()
    return {"title": " ".join(html.unescape(parser.title).split()), "lines": parser.lines,
            "main": parser.main_lines}


def _said(text: str) -> str:
    """WordPress's own message on an error page (its first error or notice line)."""
    for pattern in (r'<div id="login_error"[^>]*>(.*?)</div>', r'<p class="message"[^>]*>(.*?)</p>',
                    r'<div class="wp-die-message">(.*?)</div>', r"<h1>(.*?)</h1>"):
        found = re.search(pattern, text, re.S)
        if found:
            return " ".join(re.sub(r"<[^>]+>", " ", html.unescape(found[1])).split())[:200]
    return ""
