# Two commands for a fresh machine: `make serve` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
# Pinned versions; setuptools' notice that every editable install prints is left out.
PIP := PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip
BIN := $(VENV)/bin
CORPUS := corpus/putin-china-visit.txt

.PHONY: install dev serve test test-fast lint clean constraints

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Reinstall only when the project's requirements change.
$(VENV)/.installed: pyproject.toml constraints.txt | $(PY)
	$(PIP) install -q -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

serve: install
	$(BIN)/groundqa serve --seed $(CORPUS)

test: dev lint
	$(BIN)/pytest -q

# The quick loop: everything but the tests marked slow or browser (about a minute here; lint apart).
test-fast: dev
	$(BIN)/pytest -q -m "not slow and not browser"

lint: dev
	$(BIN)/ruff check groundqa cli index ingest service eval tests docs/experiments
	$(BIN)/mypy groundqa

# Pin what is installed now (after `make dev` and a passing `make test`).
constraints: dev
	{ sed -n '1,2p' constraints.txt; $(PIP) freeze --exclude-editable | grep -v '^groundqa' \
	  | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.tmp && mv constraints.tmp constraints.txt

clean:
	rm -rf $(VENV) var
