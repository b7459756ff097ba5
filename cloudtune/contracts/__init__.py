"""Each cloud's container contract in one module: the paths, variable names and argument conventions that the
launcher declares in its request, the local launcher lays out (`cloudtune.local.layout`) and the runtime reads
(`cloudtune.runtime.context`). Standard library only: the runtime and the CLI import these."""
