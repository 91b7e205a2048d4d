"""The wordpress image (lessons/apps/wordpress) with the mariadb image, for real: built from
Debian's packages with ``edu build`` (once per run: a module fixture), a database and a
WordPress container on one user network, WordPress's installer on a free host port, the
install, a login and a post made with HTTP requests alone, the post read back as a visitor,
and the kernel's connection table as the witness that no request left the host.

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid

import pytest
from conftest import need

from edu_runtime.networks import conntrack
from edu_runtime.notebook import wordpress as wp
from edu_runtime.notebook.course import lessons_dir

TAG = f"l08-t{uuid.uuid4().hex[:6]}"  # this run's image tags: TAG-wordpress, TAG-mariadb
DB_ENV = {"MARIADB_ROOT_PASSWORD": "l08-root", "MARIADB_DATABASE": "blog",
          "MARIADB_USER": "blogger", "MARIADB_PASSWORD": "l08-blogger"}
WP_ENV = {"WORDPRESS_DB_HOST": "db", "WORDPRESS_DB_USER": "blogger",
          "WORDPRESS_DB_PASSWORD": "l08-blogger", "WORDPRESS_DB_NAME": "blog",
          "WORDPRESS_TABLE_PREFIX": "l08t_"}
ADMIN = {"user": "teacher", "password": "l08-teacher-pw", "email": "teacher@example.test"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def edu(python: str, *argv: str, check: bool = True, timeout: float = 120
        ) -> subprocess.CompletedProcess:
    out = subprocess.run([python, "-m", "edu_cli.main", *argv], capture_output=True,
                         text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def env_flags(env: dict[str, str]) -> list[str]:
    return [flag for key, value in env.items() for flag in ("-e", f"{key}={value}")]


def inspect(python: str, name: str) -> dict:
    return json.loads(edu(python, "inspect", name).stdout)[0]


def wait(what: str, test, timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while not test():
        assert time.monotonic() < end, f"{what}: not so after {timeout} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def images(python):
    """The two images, built here with ``edu build`` as lesson 08 builds them (the debian
    base first, on an empty store); their tags removed after the module."""
    from edu_runtime.images import bootstrap
    from edu_runtime.images.store import Store
    from edu_runtime.notebook.building import build_image

    need(os.geteuid() == 0, "the wordpress tests run as root (CI does)")
    bootstrap.bootstrap(Store(), "debian", progress=False)
    tags = {"wordpress": f"{TAG}-wordpress", "mariadb": f"{TAG}-mariadb"}
    try:
        for app, tag in tags.items():
            build_image(lessons_dir() / "apps" / app, tag, progress=False)
        yield tags
    finally:
        edu(python, "rmi", *tags.values(), check=False)


@pytest.fixture(scope="module")
def site(python, images):
    """A database and WordPress on a network of their own, WordPress on a free 127.0.0.1
    port: ``{"url", "web", "db", "web_ip", "db_ip", "before"}`` (``before``: the connection
    table's keys before WordPress started). Everything removed after the module."""
    net, db, web = f"{TAG}-net", f"{TAG}-db", f"{TAG}-web"
    port = free_port()
    edu(python, "network", "create", net)
    try:
        edu(python, "run", "-d", "--name", db, "--network", net, "--network-alias", "db",
            *env_flags(DB_ENV), images["mariadb"])
        wait("the database healthy", lambda: inspect(python, db)["State"].get(
            "Health", {}).get("Status") == "healthy")
        before = conntrack.keys()
        edu(python, "run", "-d", "--name", web, "--network", net, "-p",
            f"127.0.0.1:{port}:80", *env_flags(WP_ENV), images["wordpress"])
        ips = {n: inspect(python, n)["NetworkSettings"]["Networks"][net]["IPAddress"]
               for n in (db, web)}
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                return wp.Site(url).get("/")["status"] == 302
            except wp.WordPressError:
                return False
        wait("WordPress answering", answers, timeout=30)
        yield {"url": url, "web": web, "db": db, "web_ip": ips[web], "db_ip": ips[db],
               "before": before, "net": net}
    finally:
        edu(python, "rm", "-f", "-v", web, db, check=False)  # -v: the database's volume too
        edu(python, "network", "rm", net, check=False)


@pytest.fixture(scope="module")
def installed(site):
    """The site installed, a post made and read back: the Site (its pages) and the post."""
    page = wp.Site(site["url"])
    page.get("/")
    page.get("/wp-admin/install.php")
    page.install("Hello from a test", ADMIN["user"], ADMIN["password"], ADMIN["email"])
    page.login(ADMIN["user"], ADMIN["password"])
    made = page.post("A real post", "Written over HTTP, read back by a visitor.")
    seen = page.read(made["id"])
    page.get("/")
    page.get("/wp-admin/")
    return {"site": page, "post": made, "seen": seen}


def test_the_front_page_is_the_installer(site):
    page = wp.Site(site["url"])
    first = page.get("/")
    assert (first["status"], first["location"]) == (302, "/wp-admin/install.php")
    installer = page.get("/wp-admin/install.php")
    assert installer["status"] == 200
    assert wp.page_text(installer["text"])["title"] == "WordPress › Installation"
    assert 'name="weblog_title"' in installer["text"]


def test_install_login_post_and_read_back(installed):
    pages = installed["site"].pages
    said = [(p["method"], p["path"], p["status"]) for p in pages]
    assert said == [
        ("GET", "/", 302), ("GET", "/wp-admin/install.php", 200),
        ("POST", "/wp-admin/install.php?step=2", 200),
        ("GET", "/wp-login.php", 200), ("POST", "/wp-login.php", 302),
        ("GET", "/wp-admin/admin-ajax.php?action=rest-nonce", 200),
        ("POST", "/?rest_route=/wp/v2/posts", 201),
        ("GET", f"/?p={installed['post']['id']}", 200),
        ("GET", "/", 200), ("GET", "/wp-admin/", 200)]
    assert installed["post"]["status"] == "publish"
    seen = installed["seen"]
    assert seen["title"] == "A real post – Hello from a test"
    assert seen["lines"][:2] == ["A real post", "Written over HTTP, read back by a visitor."]


def test_the_site_is_served_at_the_root_and_logs_to_stdout(python, site, installed):
    assert wp.Site(site["url"]).get("/wordpress/")["status"] == 404
    out = edu(python, "logs", site["web"])
    assert '"POST /wp-admin/install.php?step=2 HTTP/1.1" 200' in out.stdout  # access log
    assert "resuming normal operations" in out.stderr  # apache's error log


def test_the_database_settings_come_from_the_environment(python, site, installed):
    tables = edu(python, "exec", site["db"], "mariadb", "-ublogger", "-pl08-blogger",
                 "--batch", "--skip-column-names", "blog", "-e", "SHOW TABLES").stdout.split()
    assert "l08t_posts" in tables and "l08t_users" in tables
    assert not [t for t in tables if t.startswith("wp_")]
    title = edu(python, "exec", site["db"], "mariadb", "-ublogger", "-pl08-blogger",
                "--batch", "--skip-column-names", "blog", "-e",
                f"SELECT post_title FROM l08t_posts WHERE ID={installed['post']['id']}")
    assert title.stdout.strip() == "A real post"


def test_no_request_leaves_the_host(python, site, installed):
    """Every connection WordPress opened, as the kernel's connection table keeps it: only to
    its database. The same table does show a name looked up from inside the container (so
    the check can see one), and WordPress's own HTTP client refuses an outside URL."""
    opened = conntrack.opened_by(site["web_ip"], site["before"])
    assert opened, "WordPress opened no connection at all: the table shows nothing"
    assert {(e.proto, e.original.dst, e.original.dport) for e in opened} == \
        {("tcp", site["db_ip"], 3306)}, [e.said() for e in opened]
    before = conntrack.keys()
    edu(python, "exec", site["web"], "php", "-r", 'gethostbyname("api.wordpress.org");')
    lookups = conntrack.opened_by(site["web_ip"], before)
    assert [(e.proto, e.original.dport) for e in lookups] == [("udp", 53)]
    refused = edu(python, "exec", site["web"], "php", "-r",
                  '$_SERVER["HTTP_HOST"] = "localhost"; '
                  'require "/usr/share/wordpress/wp-load.php"; '
                  '$r = wp_remote_get("https://api.wordpress.org/core/version-check/1.7/"); '
                  'echo is_wp_error($r) ? $r->get_error_message() : "answered";')
    assert refused.stdout == "User has blocked requests through HTTP."


def test_each_container_has_its_own_salts(python, site, images):
    salts = "/etc/wordpress/salts.php"
    mine = edu(python, "exec", site["web"], "cat", salts).stdout
    other = edu(python, "run", "--rm", "--network", "none", images["wordpress"], "cat",
                salts).stdout
    assert "'AUTH_KEY' =>" in mine and "'AUTH_KEY' =>" in other
    assert mine != other


def test_a_wrong_database_password_is_said_on_the_page(python, site, images):
    name, port = f"{TAG}-bad", free_port()
    try:
        edu(python, "run", "-d", "--name", name, "--network", site["net"], "-p",
            f"127.0.0.1:{port}:80", *env_flags({**WP_ENV, "WORDPRESS_DB_PASSWORD": "wrong"}),
            images["wordpress"])
        page = wp.Site(f"http://127.0.0.1:{port}")
        wait("the second WordPress answering", lambda: _answers(page), timeout=30)
        got = page.get("/")
        assert got["status"] == 500
        assert "Error establishing a database connection" in got["text"]
    finally:
        edu(python, "rm", "-f", name, check=False)


def _answers(page: wp.Site) -> bool:
    try:
        page.get("/")
        return True
    except wp.WordPressError:
        return False
