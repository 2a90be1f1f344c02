.PHONY: demo test test-fast bench lint clean
demo:        ## demo CA for example.org in a temp dir: init, issue, bundle, postfix, TLSA
	bash scripts/demo.sh
test:        ## install apt packages + venv, run the whole suite
	bash scripts/test.sh
test-fast:   ## skip the slow differential tests
	bash scripts/test.sh -m 'not slow'
bench:       ## benchmarks, printing ratios against anchors measured in the same run
	bash scripts/bench.sh
clean:
	rm -rf .venv build *.egg-info .pytest_cache
