# Two entry points a new user needs: `make demo` and `make test`. Both create/reuse a local virtual environment.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output

.PHONY: demo test install clean

install: $(STAMP)

# torch is installed first and pinned in every later pip call, otherwise pip resolves a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test]" "torch==2.13.0"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m data_prep.demo --out $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile tests

clean:
	rm -rf $(VENV) $(DEMO_DIR)
