"""The compile stage: the pass manager, textual and named pipelines, instruments, the
compile driver that ties the stages together, the compile cache and the arena algorithms."""
