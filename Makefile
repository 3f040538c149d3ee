# make demo / make test / make bench: each creates and reuses .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATASET ?= alldata
export FIFTYONE_DO_NOT_TRACK := true

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv
	# torch through pip: it takes the release that lies on this machine's disk (uv would download ~3 GB)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/uv pip install --python $(BIN)/python -q -e '.[gen,hub,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/alldata ingest --all --dataset $(DATASET)
	$(BIN)/alldata link-crops --dataset $(DATASET)
	$(BIN)/alldata split --dataset $(DATASET) --by group --ratios 0.7,0.15,0.15 --seed 0
	$(BIN)/alldata info $(DATASET)
	# a few-minute rare-class benchmark (quick: 2 folds, 1 seed, tiny generator runs); prints the gain table
	$(BIN)/alldata benchmark recipes/rare-class-recovery.yaml --dataset $(DATASET) --quick --out runs/rare-class-recovery-quick

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

lint: $(STAMP)
	$(BIN)/ruff check alldata generators tests bench

clean:
	rm -rf $(VENV) build *.egg-info
