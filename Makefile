# Two commands for a fresh machine: `make serve` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
CORPUS := corpus/putin-china-visit.txt

.PHONY: install dev serve test lint clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Reinstall only when the project's requirements change.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

serve: install
	$(BIN)/groundqa serve --seed $(CORPUS)

test: dev lint
	$(BIN)/pytest -q

lint: dev
	$(BIN)/ruff check index service eval tests
	$(BIN)/mypy index service eval

clean:
	rm -rf $(VENV) var
