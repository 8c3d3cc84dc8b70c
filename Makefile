# Convenience wrappers; the real entry point is dev.py (needs only Python).
.PHONY: demo test bench venv clean
demo:
	python3 dev.py demo
test:
	python3 dev.py test
bench:
	python3 dev.py bench
venv:
	python3 dev.py venv
clean:
	rm -rf .venv work_dirs .pytest_cache
