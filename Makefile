# The two commands a newcomer needs: `make lab` and `make test`. Both prepare everything
# first (scripts/setup.sh is idempotent), so either works from a fresh clone.
.PHONY: lab hub test setup setup-test services-stop lint bench clean record

lab: setup
	scripts/lab

# The course's JupyterHub for a class on one machine (docs/hub.md), as root; on 127.0.0.1:8000
# unless told otherwise: `make hub HUB_ARGS="--ip 0.0.0.0 --port 8000"`.
hub: setup
	scripts/hub $(HUB_ARGS)

test: setup-test
	.venv/bin/python -m pytest $(PYTEST_ARGS)

setup:
	scripts/setup.sh

setup-test:
	scripts/setup.sh --test

# Record lessons' live parts for replay (lessons/recordings/): `make record LESSON=06-step-by-step`,
# or every lesson without LESSON. Run it as root on a host that runs the lessons live.
record: setup-test
	.venv/bin/python scripts/record $(LESSON)

services-stop:
	scripts/services.sh stop

lint: setup
	.venv/bin/ruff check edu_runtime vm_compare edu_cli tests bench lessons

bench: setup-test
	.venv/bin/python bench/cli_startup.py

clean:
	rm -rf .venv .pytest_cache
