# Two commands do all the set-up: `make demo` and `make test` each create .venv and install
# what they need (torch pinned to the CPU-friendly 2.13.0 release) before running.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_OUT ?= demo_out

.PHONY: setup test demo lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'  # torch>=2.4 is met: the pin above stays
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -n 2 --durations=15

demo: $(STAMP)
	$(VENV)/bin/clotseg demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/predict_latency.py
	$(PY) benchmarks/onnx_latency.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
