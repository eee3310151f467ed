# remi-tf: `make demo` (prepare -> train -> evaluate -> export -> serve + lookup, on MovieLens-100K with its
# genres and user profiles)
# and `make test`.
# Both create .venv when it is missing. DATA=<log file> runs the demo on another CSV/TSV/.inter log.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo
RECBOLE_WHEEL_DIR := .cache/recbole
ML100K := $(RECBOLE_WHEEL_DIR)/ml-100k/ml-100k.inter
DATA ?= $(ML100K)
CONFIG ?= configs/ml-100k.yaml
PORT ?= 8501
GRPC_PORT ?= 8500
ITEM_NAMES ?= $(if $(filter $(ML100K),$(DATA)),$(RECBOLE_WHEEL_DIR)/ml-100k/ml-100k.item,)
# Side features of MovieLens-100K (RecBole's .item and .user files): genres into the item tower, the user's
# age, gender and occupation into the query tower; the lookups then name a profile.
ML100K_FEATURES := --item-features $(RECBOLE_WHEEL_DIR)/ml-100k/ml-100k.item:class \
	--user-features $(RECBOLE_WHEEL_DIR)/ml-100k/ml-100k.user:age,gender,occupation
ML100K_PROFILE := --user-feature age=25 --user-feature gender=F --user-feature occupation=student
FEATURES ?= $(if $(filter $(ML100K),$(DATA)),$(ML100K_FEATURES),)
PROFILE ?= $(if $(filter $(ML100K),$(DATA)),$(ML100K_PROFILE),)
# 3: TensorFlow's C++ errors too (a CPU machine logs a failed CUDA init); Python errors still show
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: venv demo test test-all lint wheel-check clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# MovieLens-100K as RecBole ships it: the atomic files inside the recbole==1.2.1 wheel.
$(ML100K): | $(STAMP)
	mkdir -p $(RECBOLE_WHEEL_DIR)
	$(BIN)/pip download --quiet --no-deps --dest $(RECBOLE_WHEEL_DIR) recbole==1.2.1
	$(BIN)/python -c "import glob, zipfile, os; \
	wheel = zipfile.ZipFile(glob.glob('$(RECBOLE_WHEEL_DIR)/recbole-1.2.1-*.whl')[0]); \
	os.makedirs('$(RECBOLE_WHEEL_DIR)/ml-100k', exist_ok=True); \
	[open('$(RECBOLE_WHEEL_DIR)/ml-100k/' + os.path.basename(n), 'wb').write(wheel.read(n)) \
	 for n in wheel.namelist() if n.startswith('recbole/dataset_example/ml-100k/')]"

demo: $(STAMP) $(DATA)
	$(BIN)/remi prepare --input $(DATA) --output $(DEMO_DIR)/data --overwrite $(FEATURES)
	rm -rf $(DEMO_DIR)/model
	$(BIN)/remi train --data $(DEMO_DIR)/data --model-dir $(DEMO_DIR)/model --config $(CONFIG)
	$(BIN)/remi evaluate --model-dir $(DEMO_DIR)/model --split test --plots $(DEMO_DIR)/plots \
	    $(if $(ITEM_NAMES),--item-names $(ITEM_NAMES),)
	rm -rf $(DEMO_DIR)/export
	$(BIN)/remi export --model-dir $(DEMO_DIR)/model --output $(DEMO_DIR)/export --index both --k 20
	$(BIN)/remi serve --export-dir $(DEMO_DIR)/export --port $(PORT) --grpc-port $(GRPC_PORT) & server=$$!; \
	history="$$(sed -n '20,24p' $(DEMO_DIR)/data/items.tsv | cut -f1 | tr '\n' ' ')"; \
	$(BIN)/remi lookup --server http://127.0.0.1:$(PORT) --history "$$history" --k 10 --wait 180 \
	    $(if $(ITEM_NAMES),--item-names $(ITEM_NAMES),) $(PROFILE) && \
	$(BIN)/remi lookup --server 127.0.0.1:$(GRPC_PORT) --grpc --model remi-exact --history "$$history" --k 5 \
	    $(if $(ITEM_NAMES),--item-names $(ITEM_NAMES),) $(PROFILE); \
	status=$$?; kill $$server; exit $$status

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/mypy

# `pip install .` as a user does it: build the wheel, install it into a fresh venv outside the checkout, run it.
wheel-check: $(STAMP)
	rm -rf dist && $(BIN)/pip wheel --quiet --no-deps --no-build-isolation -w dist .
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv $$tmp/venv && $$tmp/venv/bin/pip install --quiet dist/remi_tf-*.whl && \
	cd $$tmp && ./venv/bin/remi --version && ./venv/bin/remi prepare --help > /dev/null && \
	printf 'user_id,item_id,timestamp\n%s' "$$(for u in 1 2 3 4 5 6; do for i in 1 2 3 4 5 6; do \
	    echo "$$u,$$i,$$i"; done; done)" > log.csv && \
	./venv/bin/remi prepare --input log.csv --output data > /dev/null && test -f data/manifest.json && \
	./venv/bin/python -c "import remi_tf.export, remi_tf.pipelines; print('installed:', remi_tf.__file__)" && \
	! ./venv/bin/python -c "import export" 2>/dev/null && ! ./venv/bin/python -c "import pipelines" 2>/dev/null

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
