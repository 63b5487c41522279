"""ec2backup's benchmark suite: ``python -m benchmarks`` (``make bench``). See
docs/performance.md for the results and how each figure is measured."""
