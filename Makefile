# Two entry points for a new user: `make train` and `make test`. Each builds .venv on first use,
# with the versions in constraints.txt (those the README's figures came from).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARGS   ?=
EXTRAS ?= dev,plots,predict,notebook

.PHONY: train test lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

# Trains the chapter's Keras model on the real MNIST (fetched and verified on first use).
train: $(VENV)/.installed
	$(PY) -m jaxmnist.train $(ARGS)

# The whole suite, the marked integration tests (real data) included, on every core.
test: $(VENV)/.installed
	$(PY) -m pytest -n auto $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed
	$(PY) -m benchmarks.compare $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
