"""Business logic of the loop, which drives both apps: the offline demo, and the pipeline."""
