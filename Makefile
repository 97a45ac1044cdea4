# The two commands of the README. Both set up .venv themselves, so they work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt
STAMP := $(VENV)/.installed

.PHONY: demo test bench setup clean

setup: $(STAMP)

# tf-keras (Keras 2) is only for the tests of Keras 2 models; --no-deps keeps it from pulling the full
# `tensorflow` package beside tensorflow-cpu.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[all,test]'
	$(PIP) --no-deps tf-keras
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/modelshell --demo

test: $(STAMP)
	$(PY) -m pytest -q

# Figures measured side by side in one run (ratios against each one's reference); see benchmarks/.
bench: $(STAMP)
	$(PY) benchmarks/bench_transfer.py

clean:
	rm -rf $(VENV) *.egg-info
