# Two commands matter: `make run` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench soak migrate clean browser

$(STAMP): setup.cfg pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mybot run

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Headless Chromium + chromedriver from Debian for the HTML review test (tests/test_review_html.py).
# Installed when missing and apt-get can run; otherwise a note, and that test skips (outside CI only:
# with CI set it fails, so CI must be able to install them).
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "browser: chromium/chromedriver missing and no apt-get: the HTML review test will skip"; \
	else \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
		if [ "$$SUDO" = none ]; then \
			echo "browser: not root and no sudo: cannot apt-get install chromium chromium-driver"; \
			if [ -n "$$CI" ]; then exit 1; fi; \
		else \
			echo "browser: installing chromium chromium-driver (apt-get)"; \
			( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
				chromium chromium-driver >/dev/null ) \
			|| { echo "browser: apt-get failed: the HTML review test will skip"; [ -z "$$CI" ]; }; \
		fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .

migrate: $(STAMP)
	$(BIN)/mybot migrate

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

# 30 minutes of the real runtime under chaos (actor restarts, PostgreSQL and Redis cuts, manual trades), then
# the invariants (bench/soak.py). Uses the local PostgreSQL (database `test`) and Redis like the tests, in a
# schema and key prefix of its own, removed afterwards; report in var/soak/soak.json. Exit 0 = nothing lost.
SOAK_MINUTES ?= 30
SOAK_SEED    ?= 1
soak: $(STAMP)
	$(BIN)/python -m bench.soak --minutes $(SOAK_MINUTES) --seed $(SOAK_SEED) --out var/soak

clean:
	rm -rf $(VENV) var build *.egg-info
