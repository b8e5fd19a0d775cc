"""Worker processes: each loads an ASR engine once and decodes jobs from the dispatcher."""
