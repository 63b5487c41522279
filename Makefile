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

# `make bench` measures the speed tricks (benchmarks/fastpaths.py) on Debian's own interpreter,
# the one CI and a fresh Debian machine run ec2backup on, in a virtualenv of its own.
SYSTEM_PYTHON ?= /usr/bin/python3
SYSTEM_VENV   := .venv-system
$(SYSTEM_VENV)/.installed: pyproject.toml
	$(SYSTEM_PYTHON) -m venv $(SYSTEM_VENV)
	$(SYSTEM_VENV)/bin/pip install --quiet --upgrade pip
	$(SYSTEM_VENV)/bin/pip install --quiet -e .
	touch $@

# The local cloud runs real sshd, rsync, mkfs and loop devices (Debian packages; needs root);
# the fidelity tests set ACLs, extended attributes and file capabilities (acl, attr, libcap2-bin).
system-deps:
	@missing=""; for c in rsync sshd ssh ssh-keygen mkfs.ext4 losetup unshare nsenter sudo \
	  setfacl setfattr setcap; do \
	  command -v $$c >/dev/null 2>&1 || [ -x /usr/sbin/$$c ] || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages (missing:$$missing)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    rsync openssh-server openssh-client e2fsprogs util-linux mount sudo \
	    acl attr libcap2-bin >/dev/null; \
	fi

demo: venv system-deps
	$(BIN)/python scripts/demo.py

# Then the plain way of every speed trick (ec2backup/fastpaths.py): the unit tests of the
# modules that hold one, again with every trick off.
FASTPATH_TESTS := tests/adapters tests/cli/test_app.py tests/test_fastpaths.py
test: venv system-deps
	$(BIN)/pytest
	EC2BACKUP_NO_FASTPATHS=1 $(BIN)/pytest -q $(FASTPATH_TESTS)

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

bench: venv system-deps $(SYSTEM_VENV)/.installed
	EC2BACKUP_BENCH_PYTHON=$(CURDIR)/$(SYSTEM_VENV)/bin/python $(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) $(SYSTEM_VENV) .pytest_cache .mypy_cache .ruff_cache .demo
