# The course's JupyterHub: a class on one machine (docs/hub.md is the instructor's guide).
#
# Start it with `make hub` (scripts/hub), as root. Every student is a real Unix account and
# logs in with their Unix password (PAM). Each student's JupyterLab runs as them, from the
# course installed in /opt/edu-course (deploy/hub/install.py), and the course's engine runs
# rootless for them: their own image store and containers under their home, user namespaces,
# pasta for the network. Students cannot see or remove each other's containers, images or
# networks, because those live in each student's own store.
#
# Settings an instructor may change, as environment variables (scripts/hub takes flags too):
#   EDU_HUB_IP            address students connect to: 127.0.0.1 (this machine only) unless
#                         you say otherwise, e.g. 0.0.0.0 for the room's network (put TLS in
#                         front of it then: JupyterHub's own ssl_cert/ssl_key, or a proxy)
#   EDU_HUB_PORT          its port (8000)
#   EDU_HUB_API_PORT      the hub's internal API port, on 127.0.0.1 (8082; JupyterHub's own
#                         default 8081 is the port lesson 02 publishes)
#   EDU_HUB_PROXY_API_PORT  the proxy's API port, on 127.0.0.1 (8001)
#   EDU_HUB_STATE         where the hub keeps its database and cookie secret (/var/lib/edu-hub)
#   EDU_HUB_GROUP         Unix group whose members may log in (edu-students; empty for none);
#                         students the hub already knows (added in its admin page or REST
#                         API) may log in too
#   EDU_HUB_ADMINS        Unix users who get the hub's admin page, comma-separated (none)
#   EDU_HUB_ADMIN_TOKEN   an API token for the "edu-admin" service (scripts, tests, benches)
#   EDU_HUB_PORTS_FIRST   first port of the students' port ranges (20000; classroom.py)
#
# Each student's host ports: ten per student, by uid (uid 1000: 20000-20009, uid 1001:
# 20010-20019, ...), given to their server as EDU_PORTS, which the lessons publish on.

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import classroom  # noqa: E402

c = get_config()  # noqa: F821 - JupyterHub's config loader provides it

STATE = Path(os.environ.get("EDU_HUB_STATE", "/var/lib/edu-hub"))
STATE.mkdir(parents=True, exist_ok=True, mode=0o700)

# ---- where students connect, and the hub's own ports --------------------------------------
c.JupyterHub.ip = os.environ.get("EDU_HUB_IP", "127.0.0.1")
c.JupyterHub.port = int(os.environ.get("EDU_HUB_PORT", "8000"))
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ.get("EDU_HUB_API_PORT", "8082"))
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(STATE / "jupyterhub.pid")

# ---- the proxy: configurable-http-proxy from npm, installed in deploy/hub/node_modules ----
# The hub starts it and stops it with itself.
c.ConfigurableHTTPProxy.command = [str(HERE / "node_modules/.bin/configurable-http-proxy")]
c.ConfigurableHTTPProxy.api_url = \
    f"http://127.0.0.1:{int(os.environ.get('EDU_HUB_PROXY_API_PORT', '8001'))}"
c.ConfigurableHTTPProxy.pid_file = str(STATE / "proxy.pid")
c.ConfigurableHTTPProxy.debug = False

# ---- who may log in: real Unix accounts, by their Unix password -------------------------
c.JupyterHub.authenticator_class = "pam"
GROUP = os.environ.get("EDU_HUB_GROUP", "edu-students")
if GROUP:  # empty: no group, only the students the hub already knows
    c.PAMAuthenticator.allowed_groups = {GROUP}
c.Authenticator.allow_existing_users = True
c.Authenticator.admin_users = {u for u in os.environ.get("EDU_HUB_ADMINS", "").split(",") if u}
if os.environ.get("EDU_HUB_ADMIN_TOKEN"):
    c.JupyterHub.services = [{"name": "edu-admin",
                              "api_token": os.environ["EDU_HUB_ADMIN_TOKEN"]}]
    c.JupyterHub.load_roles = [{"name": "edu-admin", "services": ["edu-admin"],
                                "scopes": ["admin:users", "admin:servers", "tokens",
                                           "access:servers", "list:users", "read:users"]}]

# ---- each student's JupyterLab: a process of theirs, from the course in /opt/edu-course --
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [str(classroom.COURSE / "venv/bin/jupyterhub-singleuser")]
c.Spawner.notebook_dir = "~"
c.Spawner.default_url = "/lab/tree/notebooks/00-start-here.ipynb"
# A whole class logs in at once at the start of a lesson: 30 servers starting together on
# 2 cores take a while (bench/hub_class.py measures it).
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 180
# Only what we set below reaches a student's server (not root's PATH or venv).
c.Spawner.env_keep = []
c.Spawner.args = [
    # Terminals: the student's ~/.bashrc, then the course's venv (deploy/hub/bashrc).
    "--ServerApp.terminado_settings={'shell_command': ['/bin/bash', '--rcfile', "
    f"'{classroom.COURSE / 'course/hub-bashrc'}', '-i']}}",
    # No news pop-up, no update checks (offline rooms), as `make lab`.
    f"--LabApp.app_settings_dir={classroom.COURSE / 'course/scripts/lab-settings'}",
]


def _before_start(spawner):
    """/run/user/UID, the student's copy of the notebooks (first start only), and the
    student's environment: the course's venv, their own port range (EDU_PORTS)."""
    name = spawner.user.name
    classroom.prepare(name)
    spawner.environment = {**spawner.environment, **classroom.environment(name)}


c.Spawner.pre_spawn_hook = _before_start
# A student's containers are theirs: stopping their server (or the hub) leaves them running,
# as closing a laptop's JupyterLab leaves `docker run -d` containers running. docs/hub.md
# says how to stop them all at the end of a class.
c.JupyterHub.cleanup_servers = True
c.JupyterHub.shutdown_on_logout = False
