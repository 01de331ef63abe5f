"""Command lines: user errors as ``error:`` lines (`run`), the task CLI skeleton (`task`), the inference
subcommand (`infer`) and the prediction writer (`predict`)."""
