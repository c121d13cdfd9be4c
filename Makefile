# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export SPURLAB_DATA ?= $(abspath ../shared/data)

.PHONY: demo test lint install clean bench

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# constraints.txt pins the tested set, torch==2.13.0 being the CPU wheel on this disk
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/spurlab audit --quick --out runs/demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples

test: lint
	@$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi
	@echo "GPU-path tests once more, on the CPU (without CUDA they were skipped above)"
	SPURLAB_TEST_GPU_DEVICE=cpu $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_cuda_paths.py

bench: $(STAMP)  # long: each benchmark times a reference path too (see benchmarks/RESULTS.md)
	for m in benchmarks/bench_*.py; do $(BIN)/python -m benchmarks.$$(basename $$m .py) || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
