"""Weights: which model sources a preset names, which files a load reads (from a folder, the Hugging Face cache or
the hub), the offline `tiny` stand-ins, device choice and provenance. The bottom layer above `errors`/`files`."""
