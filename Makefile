# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs dcsi with its extras before it runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch/torchvision must come as a matching pair (see README, "Installing").
TORCH_PAIR ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-all lint install benchmarks cards cards-openclipart index-references clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PAIR) || $(BIN)/pip install -q torch torchvision
	$(BIN)/pip install -q -e '.[all]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dcsi analyze sample:digits --out out/digits

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

cards: $(STAMP)
	$(BIN)/dcsi analyze sample:digits --out cards/digits --no-progress
	$(BIN)/dcsi analyze sample:fashion-mnist --split train --out cards/fashion-mnist --no-progress
	$(MAKE) cards-openclipart
	$(MAKE) index-references

# The index's reference points (dcsi/data/index_references.json) from the cards above and
# two anchors on Fashion-MNIST's cached features; then the cards' readings are updated.
index-references: $(STAMP)
	$(BIN)/python benchmarks/index_references.py --refresh-cards

# Debian's openclipart-png: 8,121 clip-art PNGs (RGBA, all sizes) in 22 category folders.
cards-openclipart: $(STAMP)
	test -d /usr/share/openclipart/png || apt-get install -y -qq openclipart-png
	$(BIN)/dcsi analyze /usr/share/openclipart/png --out cards/openclipart --no-progress

clean:
	rm -rf $(VENV) out build *.egg-info
