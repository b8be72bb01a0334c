# medxfer: `make test` and `make demo` create .venv and install the project when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The PyTorch build this project is tested with (pip takes it from the local disk here).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install test test-all demo demo-pretrain lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m medxfer.commands.demo

demo-pretrain: $(STAMP)
	$(PY) -m medxfer.commands.demo pretrain

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf runs data/synthetic .pytest_cache
