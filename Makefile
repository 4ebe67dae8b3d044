# The two commands of the README:
#   make run    set up .venv if missing, then run the whole job on the default dataset
#   make test   set up .venv (with test extras) if missing, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARGS   ?=

.PHONY: run test bench gpu-check clean-artifacts

$(VENV)/.installed: requirements.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# Put this checkout on the venv's path (like an editable install, without a build
	# step), so `luigi --module tasks ...` works from any directory.
	echo "$(CURDIR)" > "$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/deep_ranking.pth"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/luigi --module tasks RunAll $(ARGS)

# Two test processes (pytest-xdist), one per core of the reference machine; each
# test module stays in one process, so its module fixtures are built once.
test: $(VENV)/.installed-test
	$(PY) -m pytest -q -n 2 --dist loadfile $(ARGS)

bench: $(VENV)/.installed-test
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

# On a CUDA machine: GPU tests, training/embedding throughput, CPU/GPU agreement,
# 2-GPU DDP; one table, under 8 minutes, non-zero exit if a check fails.
#   make gpu-check ARGS="--out $$OUT/gpu-check.md"      (CPU dry run: ARGS="--device cpu --quick")
# Order-only: an existing venv is used as it is (a GPU machine may be offline).
gpu-check: | $(VENV)/.installed-test
	$(PY) bench/gpu_check.py $(ARGS)

clean-artifacts:
	rm -rf artifacts/*/ artifacts/.tmp-*
