# The two commands: `make run` and `make test`. Both create .venv when missing and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The pair of wheels that installs from this machine's disk; pyproject admits a range.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# Empty: convscope serve reads CONVSCOPE_HOST / CONVSCOPE_PORT (default 127.0.0.1:8000).
HOST ?=
PORT ?=
PYTEST_ARGS ?=

.PHONY: run test install install-dev lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	$(PY) -m pip install -q $(TORCH_PINS)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(VENV)/bin/convscope serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

# pytest exits 5 when a selection (PYTEST_ARGS="-m gpu", say) collects no test: that is not a failure.
test: install-dev
	$(VENV)/bin/ruff check app tests bench
	$(VENV)/bin/mypy
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests collected for '$(PYTEST_ARGS)'"; rc=0; fi; exit $$rc

lint: install-dev
	$(VENV)/bin/ruff check app tests bench
	$(VENV)/bin/mypy

bench: install-dev
	$(PY) bench/classify.py
	$(PY) bench/playground.py
	$(PY) bench/explore.py
	$(PY) bench/finetune.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
