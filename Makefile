# Both entry points set themselves up from nothing: a venv, the CPU torch wheel first, then the package.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test lint clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/activate setup.py
	# torch first and pinned: a bare `pip install torch` would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup  ## the main job: train + evaluate on the bundled demo corpus, CPU, a few minutes
	HF_HUB_OFFLINE=1 $(BIN)/python train.py examples/configs/demo.yaml

lint: setup
	$(BIN)/ruff check .

test: setup lint  ## ruff, then the whole test suite
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) outputs
