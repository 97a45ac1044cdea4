# The two commands of the README. Both set up .venv themselves, so they work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt
STAMP := $(VENV)/.installed

.PHONY: demo test bench setup clean

setup: $(STAMP)

# tf-keras (Keras 2) is only for the tests of Keras 2 models; --no-deps keeps it from pulling the full
# `tensorflow` package beside tensorflow-cpu. transformers, keras-hub and torchvision are only for the
# tests of real models (tests/real_models.py). keras-hub and tensorflow-text go in with --no-deps and
# their pure-Python needs by hand: tensorflow-text asks for `tensorflow`, which would replace
# tensorflow-cpu. torchvision too: its only wheel of the pinned version is a CUDA build, which would pull
# a CUDA torch; against the CPU torch its compiled ops do not load, and tests/real_models.py defines
# their schemas so that the Python side imports.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[all,onnx,test]'
	$(PIP) --no-deps tf-keras
	$(PIP) transformers
	$(PIP) --no-deps keras-hub tensorflow-text torchvision
	$(PIP) regex sentencepiece tokenizers kagglehub kagglesdk pillow
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/modelshell --demo

test: $(STAMP)
	$(PY) -m pytest -q

# Figures measured side by side in one run (ratios against each one's reference); see benchmarks/ and
# the README's Performance section. IPython is installed here only, as the start-up reference; without it
# that one figure is skipped. `make bench BENCH_ARGS=--quick` takes 5 runs of everything.
BENCH_ARGS ?=
bench: $(STAMP)
	-$(PIP) ipython || echo "ipython could not be installed: the start-up figure is measured without it"
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info
