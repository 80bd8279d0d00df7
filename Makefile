# Two entry points for a new user: `make train` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARGS   ?=

.PHONY: train test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Trains the chapter's Keras model on the real MNIST (fetched and verified on first use).
train: $(VENV)/.installed
	$(PY) -m jaxmnist.train $(ARGS)

# The whole suite, the marked integration tests (real data) included.
test: $(VENV)/.installed
	$(PY) -m pytest $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed
	$(PY) -m benchmarks.compare $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
