# The two commands: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config/relay.toml
STAMP  := $(VENV)/.installed

.PHONY: run test test-cluster check lint format bench clean browser scanners

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Starts the relay with an embedded Redis and the dev config, plus the catch-all sink
# that the dev config routes every domain to (mail lands in var/sink/).
run: $(STAMP)
	@$(BIN)/relay sink --config $(CONFIG) & sink=$$!; \
	trap 'kill $$sink 2>/dev/null' EXIT INT TERM; \
	$(BIN)/relay run --config $(CONFIG)

# Debian's chromium for the browser test (apt, when missing and root).
browser:
	bash scripts/install-chromium.sh

# clamd and rspamd from Debian (when missing and root): the content tests run both for real,
# with signatures and rules they write; no official database is ever downloaded.
scanners:
	bash scripts/install-scanners.sh

test: $(STAMP) browser scanners
	$(BIN)/pytest -q
	$(MAKE) test-cluster

# The core suites again with the `redis` fixture and the relays they start on a 3-primary,
# 3-replica Redis Cluster (started by the tests from the same redis-server binary).
CLUSTER_SUITES := tests/test_queue_store.py tests/test_queue_fleet.py tests/test_leases.py \
	tests/test_quota.py tests/test_quota_smtp.py tests/test_submission.py \
	tests/test_auth_guard.py tests/test_delivery_engine.py tests/test_suspensions.py \
	tests/test_suspension_atomic.py tests/test_complaints.py tests/test_events.py \
	tests/test_end_to_end.py tests/test_webhooks.py tests/test_quarantine.py \
	tests/test_egress.py tests/test_shaping_gate.py tests/test_notices.py \
	tests/test_apps_api.py tests/test_node_registry.py tests/test_node.py
test-cluster: $(STAMP)
	RELAY_TEST_REDIS=cluster $(BIN)/pytest -q $(CLUSTER_SUITES)

# What CI gates before the tests (.ci/run): formatting, lint, strict types, and asserts that
# cannot fail (scripts/check_asserts.py).
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy relay quota reputation
	$(BIN)/python scripts/check_asserts.py tests

check: lint browser scanners
	$(BIN)/pytest -q --cov --cov-report=term-missing:skip-covered

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .coverage

# Measured, never timed tests: the relay side by side with a throwaway Postfix+Dovecot (SASL
# AUTH, the fair baseline) and a Postfix without AUTH (installed here with apt when missing
# and root; without them, our numbers only), with Redis commands and round trips per message;
# whole-path throughput against a direct-to-sink baseline, and quota decisions/s against a
# bare Redis round trip, and a customer's login during an AUTH flood against no flood
# (loopback only; JSON in var/bench/), and HTTP API sends/s against SMTP submissions/s,
# and one node on one Redis against two nodes on a 3+3 Redis Cluster.
# `make test` never needs Postfix.
bench: $(STAMP) scanners
	bash bench/install-postfix.sh
	$(BIN)/python -m bench.scenarios
	$(BIN)/python -m bench.e2e
	$(BIN)/python -m bench.shaping
	$(BIN)/python -m bench.quota
	$(BIN)/python -m bench.dkim
	$(BIN)/python -m bench.reputation
	$(BIN)/python -m bench.auth_flood
	$(BIN)/python -m bench.apps
	$(BIN)/python -m bench.content
	$(BIN)/python -m bench.fleet
