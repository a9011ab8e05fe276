# The two commands of the README. Both run the idempotent set-up first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench clean

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/fourd demo

test: setup
	bash scripts/run_tests.sh

lint: setup
	$(PY) -m flake8 fourd_ros test launch scripts

bench: setup
	$(VENV)/bin/fourd bench

clean:
	rm -rf build $(VENV) out
