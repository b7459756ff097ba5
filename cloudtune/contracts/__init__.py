"""Each cloud's container contract in one module: the paths, variable names and argument conventions that the
launcher declares in its request, the local launcher lays out (`cloudtune.local.layout`) and the runtime reads
(`cloudtune.runtime.context`). Beside them, what the job writes and others read: the log lines and the regexes cloud
metric definitions are built from (`logfmt`), the status file (`progress`), TensorBoard event files (`tbevents`) and
the metric contract of tuning services (`metrics`). Standard library only: the runtime and the CLI import these."""
