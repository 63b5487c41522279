# Set-up on a fresh Debian/Ubuntu machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv system-deps demo test lint bench crash-matrix errors-doc clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The local cloud runs real sshd, rsync, mkfs and loop devices (Debian packages; needs root).
system-deps:
	@missing=""; for c in rsync sshd ssh ssh-keygen mkfs.ext4 losetup unshare nsenter sudo; do \
	  command -v $$c >/dev/null 2>&1 || [ -x /usr/sbin/$$c ] || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages (missing:$$missing)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    rsync openssh-server openssh-client e2fsprogs util-linux mount sudo >/dev/null; \
	fi

demo: venv system-deps
	$(BIN)/python scripts/demo.py

test: venv system-deps
	$(BIN)/pytest

# SIGKILL at every crash point, recover three ways, write docs/reliability.md.
crash-matrix: venv system-deps
	rm -f .crash-matrix.jsonl
	CRASH_MATRIX_FULL=1 CRASH_MATRIX_RESULTS=$(CURDIR)/.crash-matrix.jsonl $(BIN)/pytest -q tests/e2e/test_crash_matrix.py; \
	  status=$$?; $(BIN)/python scripts/reliability_report.py .crash-matrix.jsonl docs/reliability.md; \
	  exit $$status

# Run the bad-input table and write docs/errors.md from the messages it saw.
errors-doc: venv system-deps
	rm -f .errors-doc.jsonl
	ERRORS_DOC=$(CURDIR)/.errors-doc.jsonl $(BIN)/pytest -q tests/e2e/test_bad_input.py
	$(BIN)/python scripts/errors_doc.py .errors-doc.jsonl docs/errors.md

lint: venv
	$(BIN)/ruff check ec2backup tests migrations scripts benchmarks
	$(BIN)/ruff format --check ec2backup tests migrations scripts benchmarks
	$(BIN)/mypy
	$(BIN)/mypy benchmarks

bench: venv system-deps
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo
