"""Files: datasets, responses files, durable writes, run logs."""
