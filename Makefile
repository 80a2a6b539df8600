# Two commands matter: `make demo` and `make test`. Everything else supports them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UNITS ?= 40
BROKER ?=
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint venv mosquitto zbar clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/edge demo --units $(UNITS) $(if $(BROKER),--broker $(BROKER),)

mosquitto:
	@./scripts/ensure-mosquitto.sh

# pyzbar (the optional barcode backend, tested and benchmarked) needs the system libzbar.
zbar:
	@./scripts/ensure-zbar.sh

test: $(STAMP) mosquitto zbar
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check edge drivers vision plc simulator tests

bench: $(STAMP) mosquitto zbar
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) .pytest_cache
